#!/usr/bin/env bash
# Compress a WSJ chain model with kaldi-compress, optionally fine-tune it, decode
# test_dev93 and test_eval92 with the original graphs and compare WERs with the source.
#
# Run from egs/wsj/s5 of a Kaldi checkout where local/chain/run_tdnn.sh has finished
# (see egs_wsj/README.md). The compressed model keeps the tree and transition model,
# so the graphs in the tree directory are reused as they are.
#
# Stages: 0 compress (calibrated on a subset of the training data), 1 fine-tune
# (--finetune kaldi|distill), 2 decode, 3 compare.
#
# e.g.: run_compress.sh --method compress --param-ratio 0.5 --finetune distill \
#         exp/chain/tdnn1i_sp exp/chain/tdnn1i_c50_sp

set -e -o pipefail

# Begin configuration section.
stage=0
method=svd              # svd, tt, prune or compress: the kaldi-compress subcommand
param_ratio=0.5         # its --param-ratio, in (0, 1]
calibrate=true          # fit to activations on training utterances (prune and compress
                        # always do; false: svd/tt from the weights alone)
calibration_utts=120    # training utterances for that, evenly spaced (subset_data_dir.sh)
finetune=none           # none, kaldi (chain training, as Kaldi's own SVD recipe) or distill
tree_dir=               # default exp/chain${nnet3_affix}/tree_a_sp; has graph_tgpr, graph_bd_tgpr
lat_dir=                # --finetune kaldi; default exp/chain${nnet3_affix}/tri4b_${train_set}_lats
egs_dir=                # --finetune kaldi; default <src-dir>/egs (needs --remove-egs false)
nnet3_affix=            # i-vectors are in exp/nnet3${nnet3_affix} (_online_cmn for tdnn1i)
train_set=train_si284_sp
test_sets="test_dev93 test_eval92"
nj=                     # decoding jobs; default: the number of speakers of each test set
rescore=true            # also rescore with the tg and big-dict fg LMs, as the chain recipe does
xent_regularize=0.1     # --finetune kaldi: the value the source model was trained with
ft_epochs=1
ft_initial_lrate=0.0001 # --finetune kaldi: a fifth of tdnn1i's learning rates
ft_final_lrate=0.00001
distill_nj=1            # --finetune distill: data-parallel processes (torchrun when > 1)
use_gpu=false           # --finetune distill: through $cuda_cmd, one GPU per process
dry_run=false           # print the commands (prefixed '+ ') instead of running them
# End configuration section.
options="stage method param_ratio calibrate calibration_utts finetune tree_dir lat_dir egs_dir
 nnet3_affix train_set test_sets nj rescore xent_regularize ft_epochs ft_initial_lrate
 ft_final_lrate distill_nj use_gpu dry_run"

help_message="Usage: $0 [options] <src-dir> <dst-dir>
 e.g.: $0 --method svd --param-ratio 0.5 exp/chain/tdnn1i_sp exp/chain/tdnn1i_svd50_sp
Options (--name value or --name=value):
  --stage <n>              # start from stage n: 0 compress, 1 fine-tune, 2 decode, 3 compare
  --method <svd|tt|prune|compress>  # compression method (default $method)
  --param-ratio <r>        # its parameter budget, a share of the source's (default $param_ratio)
  --calibrate <true|false> # calibrate on training audio (default $calibrate; prune and
                           # compress need it)
  --calibration-utts <n>   # training utterances to calibrate on (default $calibration_utts)
  --finetune <none|kaldi|distill>  # fine-tuning after compression (default $finetune)
  --tree-dir <dir>         # chain tree dir with graph_tgpr and graph_bd_tgpr
  --nj <n>                 # decoding jobs (default: speakers per test set)
  --distill-nj <n>         # --finetune distill: processes under torchrun (default $distill_nj;
                           # each takes 16 chunks per step: global batch 16 x n)
  --use-gpu <true|false>   # --finetune distill: run it with \$cuda_cmd on GPUs (default $use_gpu)
  --dry-run <true|false>   # print the commands instead of running them (no Kaldi needed)
  (and --lat-dir --egs-dir --nnet3-affix --train-set --test-sets --rescore
   --xent-regularize --ft-epochs --ft-initial-lrate --ft-final-lrate)"

echo "$0 $*"  # the command line, for the log

die() { echo "$0: $*" >&2; exit 1; }

# Kaldi's parse_options.sh takes only '--name value': split '--name=value' first.
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --*=*) args+=("${1%%=*}" "${1#*=}"); shift ;;
    --help|-h) args+=("$1"); shift ;;
    --*) args+=("$1"); shift; if [ $# -gt 0 ]; then args+=("$1"); shift; fi ;;
    *) break ;;
  esac
done
set -- "${args[@]}" "$@"

kaldi_missing=
for f in cmd.sh path.sh utils/parse_options.sh steps/nnet3/decode.sh; do
  [ -f "$f" ] || kaldi_missing="$kaldi_missing $f"
done

if [ -f cmd.sh ]; then
  # shellcheck source=/dev/null
  . ./cmd.sh
else
  train_cmd=run.pl
  decode_cmd=run.pl
  cuda_cmd=run.pl
fi
if [ -f path.sh ]; then
  # shellcheck source=/dev/null
  . ./path.sh
fi
if [ -f utils/parse_options.sh ]; then
  # shellcheck source=/dev/null
  . utils/parse_options.sh
else  # the same rules as utils/parse_options.sh
  while [ $# -gt 0 ]; do
    case "$1" in
      --help|-h) echo "$help_message" >&2; exit 0 ;;
      --*) name=${1#--}; name=${name//-/_}
        [[ " ${options//$'\n'/ } " == *" $name "* ]] || die "invalid option $1"
        [ $# -ge 2 ] || die "option $1 needs a value"
        if [[ ${!name} == true || ${!name} == false ]] && [[ $2 != true && $2 != false ]]; then
          die "expected \"true\" or \"false\": $1 $2"
        fi
        printf -v "$name" '%s' "$2"
        shift 2 ;;
      *) break ;;
    esac
  done
fi

[[ $stage =~ ^-?[0-9]+$ ]] || die "--stage: expected an integer, got '$stage'"
case "$method" in svd|tt|prune|compress) ;;
  *) die "--method: expected svd, tt, prune or compress, got '$method'" ;; esac
case "$finetune" in none|kaldi|distill) ;;
  *) die "--finetune: expected none, kaldi or distill, got '$finetune'" ;; esac
case "$method" in prune|compress)
  $calibrate || die "--method $method needs --calibrate true"
  # chain training needs output-xent, whose layers read the widths that pruning cuts
  [ "$finetune" != kaldi ] || die "--method $method: use --finetune distill or none" \
    "(--finetune kaldi trains the xent branch, which pruning does not keep)" ;;
esac
[[ $calibration_utts =~ ^[1-9][0-9]*$ ]] ||
  die "--calibration-utts: expected a positive integer, got '$calibration_utts'"
if ! [[ $param_ratio =~ ^[0-9]*\.?[0-9]+$ ]] ||
   ! awk "BEGIN { exit !($param_ratio > 0 && $param_ratio <= 1) }"; then
  die "--param-ratio: expected a number in (0, 1], got '$param_ratio'"
fi
[[ -z $nj || $nj =~ ^[1-9][0-9]*$ ]] || die "--nj: expected a positive integer, got '$nj'"
[[ $distill_nj =~ ^[1-9][0-9]*$ ]] ||
  die "--distill-nj: expected a positive integer, got '$distill_nj'"

if [ $# -ne 2 ]; then
  echo "$help_message" >&2
  exit 1
fi
src_dir=$1
dst_dir=$2
[ -n "$tree_dir" ] || tree_dir=exp/chain${nnet3_affix}/tree_a_sp
[ -n "$lat_dir" ] || lat_dir=exp/chain${nnet3_affix}/tri4b_${train_set}_lats
[ -n "$egs_dir" ] || egs_dir=$src_dir/egs
ivector_root=exp/nnet3${nnet3_affix}
train_data=data/${train_set}_hires

if ! $dry_run; then
  [ -z "$kaldi_missing" ] || die "Kaldi is not set up in $PWD (no$kaldi_missing): run this" \
    "from egs/wsj/s5 of a built Kaldi, or use --dry-run true"
  command -v nnet3-latgen-faster >/dev/null || die "Kaldi's binaries are not on PATH (see path.sh)"
  command -v kaldi-compress >/dev/null || die "kaldi-compress is not on PATH (pip install kaldi-compress)"
  [ "$distill_nj" -eq 1 ] || command -v torchrun >/dev/null ||
    die "torchrun is not on PATH (it comes with torch)"
fi

# The inputs, checked before anything runs (also with --dry-run).
need() { [ -e "$1" ] || die "$1: not found: expected $2"; }
need "$src_dir/final.mdl" "the model to compress"
[ "$stage" -le 0 ] || need "$dst_dir/final.mdl" "the compressed model, made by stage 0"
if [ "$stage" -le 1 ] && [ "$finetune" = kaldi ]; then
  need "$egs_dir" "the source model's chain egs (train with --remove-egs false, or give --egs-dir)"
  need "$train_data" "the training features"
fi
if { [ "$stage" -le 1 ] && [ "$finetune" = distill ]; } || { [ "$stage" -le 0 ] && $calibrate; }; then
  need "$train_data/feats.scp" "the training features"
fi
if [ "$stage" -le 2 ]; then
  for lm in tgpr bd_tgpr; do need "$tree_dir/graph_$lm" "the source model's graph"; done
  for data in $test_sets; do
    need "data/${data}_hires" "the test set's hires features"
    [ -n "$nj" ] || need "data/${data}_hires/spk2utt" "its speakers, to set --nj"
  done
fi

# One word as the shell reads it: bare when safe, else in single quotes.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Run a command, or with --dry-run true print it as '+ word word ...'.
run() {
  if $dry_run; then
    local line="+" word
    for word in "$@"; do line+=" $(quote "$word")"; done
    echo "$line"
  else
    "$@"
  fi
}

# The features of a data dir as decode.sh gives them to the network (online CMN for tdnn1i).
feats_of() {
  local data=$1 cmvn_opts="--norm-means=false --norm-vars=false"
  [ ! -f "$src_dir/cmvn_opts" ] || cmvn_opts=$(cat "$src_dir/cmvn_opts")
  if [ -f "$src_dir/online_cmvn" ]; then
    echo "ark,s,cs:apply-cmvn-online $cmvn_opts --spk2utt=ark:$data/spk2utt $src_dir/global_cmvn.stats scp:$data/feats.scp ark:- |"
  elif [ "$cmvn_opts" != "--norm-means=false --norm-vars=false" ]; then
    echo "ark,s,cs:apply-cmvn $cmvn_opts --utt2spk=ark:$data/utt2spk scp:$data/cmvn.scp scp:$data/feats.scp ark:- |"
  else
    echo "scp:$data/feats.scp"
  fi
}
train_ivectors=$ivector_root/ivectors_${train_set}_hires
ivector_period=10  # as decode.sh reads it
[ ! -f "$train_ivectors/ivector_period" ] || ivector_period=$(cat "$train_ivectors/ivector_period")

if [ "$stage" -le 0 ]; then
  run mkdir -p "$dst_dir"
  # What decoding reads from the model directory (decode.sh), and, for chain
  # training, the transition model and the denominator graphs.
  files="tree phones.txt frame_subsampling_factor cmvn_opts online_cmvn global_cmvn.stats final.ie.id"
  [ "$finetune" != kaldi ] || files="$files 0.trans_mdl den.fst normalization.fst"
  for f in $files; do
    if [ -f "$src_dir/$f" ]; then run cp "$src_dir/$f" "$dst_dir/$f"; fi
  done
  calibration=()
  if $calibrate; then  # evenly spaced training utterances, read as nnet3-compute reads them
    cal_data=$dst_dir/calibration_data
    run utils/subset_data_dir.sh "$train_data" "$calibration_utts" "$cal_data"
    fsf=1
    [ ! -f "$src_dir/frame_subsampling_factor" ] || fsf=$(cat "$src_dir/frame_subsampling_factor")
    calibration=("--calibration-feats=$(feats_of "$cal_data")"
                 "--calibration-ivectors=scp:$train_ivectors/ivector_online.scp"
                 "--online-ivector-period=$ivector_period" "--frame-subsampling-factor=$fsf"
                 --max-utts=0)
  fi
  if [ "$finetune" = kaldi ]; then  # chain training needs the xent output: keep it
    run kaldi-compress "$method" "--param-ratio=$param_ratio" "${calibration[@]}" \
      "$src_dir/final.mdl" "$dst_dir/final.mdl"
  else  # drop the xent branch, which only training uses, before compressing
    run kaldi-compress copy --prepare-for-test=true "$src_dir/final.mdl" "$dst_dir/prepared.mdl"
    run kaldi-compress "$method" "--param-ratio=$param_ratio" "${calibration[@]}" \
      "$dst_dir/prepared.mdl" "$dst_dir/final.mdl"
    run rm "$dst_dir/prepared.mdl"
  fi
fi

if [ "$stage" -le 1 ] && [ "$finetune" = kaldi ]; then
  # As egs/fisher_swbd/s5/local/chain/run_tdnn_lstm_1a_svd.sh: train the compressed
  # network on the source model's egs, starting from it, with small learning rates.
  # shellcheck disable=SC2086  # $train_cmd is a command with options: split on purpose
  run $train_cmd "$dst_dir/log/generate_input_raw.log" \
    nnet3-am-copy --raw=true "$dst_dir/final.mdl" "$dst_dir/input.raw"
  run steps/nnet3/chain/train.py \
    --cmd "$train_cmd" \
    --trainer.input-model "$dst_dir/input.raw" \
    --feat.online-ivector-dir "$ivector_root/ivectors_${train_set}_hires" \
    --chain.xent-regularize "$xent_regularize" \
    --chain.leaky-hmm-coefficient 0.1 \
    --chain.l2-regularize 0.0 \
    --chain.apply-deriv-weights false \
    --chain.lm-opts="--num-extra-lm-states=2000" \
    --trainer.num-epochs "$ft_epochs" \
    --trainer.num-chunk-per-minibatch 128,64 \
    --trainer.max-param-change 2.0 \
    --trainer.optimization.num-jobs-initial 2 \
    --trainer.optimization.num-jobs-final 8 \
    --trainer.optimization.initial-effective-lrate "$ft_initial_lrate" \
    --trainer.optimization.final-effective-lrate "$ft_final_lrate" \
    --trainer.optimization.momentum 0.0 \
    --egs.dir "$egs_dir" \
    --cleanup.remove-egs false \
    --feat-dir "$train_data" \
    --tree-dir "$tree_dir" \
    --lat-dir "$lat_dir" \
    --dir "$dst_dir"
fi

if [ "$stage" -le 1 ] && [ "$finetune" = distill ]; then
  feats=$(feats_of "$train_data")
  # One process by default; with --distill-nj N, N data-parallel processes under
  # torchrun (gloo on CPU, nccl on GPU; rank 0 writes), holding N slots (queue.pl
  # --num-threads N) or N GPUs (--gpu N) of the job's node.
  distill_cmd=$train_cmd slots=() launch=(kaldi-compress finetune) device=()
  if $use_gpu; then
    distill_cmd=$cuda_cmd slots=(--gpu "$distill_nj") device=(--device=cuda)
  elif [ "$distill_nj" -gt 1 ]; then
    slots=(--num-threads "$distill_nj") device=(--device=cpu)
  fi
  [ "$distill_nj" -eq 1 ] || launch=(torchrun --standalone "--nproc-per-node=$distill_nj"
                                     --no-python "${launch[@]}")
  # shellcheck disable=SC2086  # $distill_cmd is a command with options: split on purpose
  run $distill_cmd "${slots[@]}" "$dst_dir/log/finetune.log" \
    "${launch[@]}" "--teacher=$src_dir/final.mdl" "--feats=$feats" \
    "--online-ivectors=scp:$train_ivectors/ivector_online.scp" \
    "--online-ivector-period=$ivector_period" "${device[@]}" \
    "$dst_dir/final.mdl" "$dst_dir/final.mdl.tuned"
  run mv "$dst_dir/final.mdl.tuned" "$dst_dir/final.mdl"
fi

if [ "$stage" -le 2 ]; then
  # As local/chain/tuning/run_tdnn_1i.sh decodes, with the source model's graphs.
  for data in $test_sets; do
    affix=${data#test_}
    data_nj=$nj
    [ -n "$data_nj" ] || data_nj=$(( $(wc -l < "data/${data}_hires/spk2utt") ))
    for lm in tgpr bd_tgpr; do
      run steps/nnet3/decode.sh \
        --acwt 1.0 --post-decode-acwt 10.0 \
        --extra-left-context 0 --extra-right-context 0 \
        --extra-left-context-initial 0 --extra-right-context-final 0 \
        --frames-per-chunk 140 \
        --nj "$data_nj" --cmd "$decode_cmd" \
        --online-ivector-dir "$ivector_root/ivectors_${data}_hires" \
        "$tree_dir/graph_$lm" "data/${data}_hires" "$dst_dir/decode_${lm}_$affix"
    done
    if $rescore; then
      run steps/lmrescore.sh --self-loop-scale 1.0 --cmd "$decode_cmd" \
        data/lang_test_tgpr data/lang_test_tg "data/${data}_hires" \
        "$dst_dir/decode_tgpr_$affix" "$dst_dir/decode_tg_$affix"
      run steps/lmrescore_const_arpa.sh --cmd "$decode_cmd" \
        data/lang_test_bd_tgpr data/lang_test_bd_fgconst "data/${data}_hires" \
        "$dst_dir/decode_bd_tgpr_$affix" "$dst_dir/decode_bd_tgpr_${affix}_fg"
    fi
  done
fi

if [ "$stage" -le 3 ]; then
  run kaldi-compress compare "$src_dir" "$dst_dir"
fi
