"""Kaldi TransitionModel (src/hmm/transition-model.cc, hmm-topology.cc).

Binary layout::

    <TransitionModel> <Topology> ivec phones, ivec phone2idx, [i32 -1 if not HMM],
      i32 num_entries, per entry: i32 num_states, per state: i32 forward_pdf_class,
      [i32 self_loop_pdf_class if not HMM], i32 num_transitions, per transition:
      i32 dst, f32 prob
    </Topology> <Tuples>|<Triples> i32 n, n x (phone, hmm_state, forward_pdf[, self_loop_pdf])
    </Tuples>|</Triples> <LogProbs> FV </LogProbs> </TransitionModel>

The text form lists each topology entry with ``<ForPhones>`` and ``<State>`` blocks.
Kaldi writes the old HMM form (``<Triples>``, no self-loop classes) exactly when
every state's forward and self-loop pdf classes agree; so does this writer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HmmState = tuple[int, int, list[tuple[int, np.floating]]]  # fwd class, self-loop class, arcs


@dataclass
class TransitionModel:
    phones: list[int]
    phone2idx: list[int]
    entries: list[list[HmmState]]
    tuples: np.ndarray          # (n, 4) int32: phone, hmm_state, forward_pdf, self_loop_pdf
    log_probs: np.ndarray

    @property
    def is_hmm(self) -> bool:
        return all(fwd == loop for entry in self.entries for fwd, loop, _ in entry)

    @property
    def num_pdfs(self) -> int:
        return int(self.tuples[:, 2:].max()) + 1 if len(self.tuples) else 0

    # --- reading -------------------------------------------------------------
    @classmethod
    def read(cls, r) -> "TransitionModel":
        r.expect_token("<TransitionModel>")
        r.expect_token("<Topology>")
        if r.binary:
            phones, phone2idx, entries, hmm = cls._read_topology_binary(r)
        else:
            phones, phone2idx, entries = cls._read_topology_text(r)
        start = r.pos
        tok = r.read_token("<Tuples> or <Triples>")
        if tok not in ("<Tuples>", "<Triples>"):
            raise r.error("<Tuples> or <Triples>", repr(tok), at=start)
        k = 4 if tok == "<Tuples>" else 3
        start = r.pos
        n = r.read_int("number of tuples")
        if n < 0:
            raise r.error("a non-negative number of tuples", str(n), at=start)
        tuples = cls._read_ints(r, n * k).reshape(n, k)
        if k == 3:
            tuples = np.concatenate([tuples, tuples[:, 2:3]], axis=1)
        r.expect_token("</Tuples>" if k == 4 else "</Triples>")
        r.expect_token("<LogProbs>")
        log_probs = r.read_vector("transition log-probs")
        r.expect_token("</LogProbs>")
        r.expect_token("</TransitionModel>")
        return cls(phones, phone2idx, entries, tuples.astype(np.int32), log_probs)

    @staticmethod
    def _read_ints(r, count: int) -> np.ndarray:
        """``count`` int32 basic values, vectorised in binary mode."""
        if not r.binary:
            return np.array([r.read_int("tuple entry") for _ in range(count)], dtype=np.int32)
        start = r.pos
        nbytes = 5 * count
        if start + nbytes > len(r.buf):
            raise r.error(f"{count} tuple integers", "end of file")
        raw = np.frombuffer(r.buf, dtype=np.uint8, count=nbytes, offset=start).reshape(count, 5)
        bad = np.nonzero(raw[:, 0] != 4)[0]
        if bad.size:
            raise r.error("int32 (size byte 4)", at=start + 5 * int(bad[0]))
        r.pos = start + nbytes
        return np.ascontiguousarray(raw[:, 1:]).view("<i4").ravel()

    @staticmethod
    def _read_topology_binary(r):
        phones = [int(x) for x in r.read_int_vector("phones")]
        phone2idx = [int(x) for x in r.read_int_vector("phone2idx")]
        n = r.read_int("number of topology entries")
        hmm = True
        if n == -1:
            hmm = False
            n = r.read_int("number of topology entries")
        entries = []
        for _ in range(_count(r, n, "topology entries")):
            states = []
            for _ in range(_count(r, r.read_int("number of states"), "states")):
                fwd = r.read_int("forward pdf class")
                loop = fwd if hmm else r.read_int("self-loop pdf class")
                arcs = []
                for _ in range(_count(r, r.read_int("number of transitions"), "transitions")):
                    arcs.append((r.read_int("transition destination"),
                                 r.read_float("transition probability")))
                states.append((fwd, loop, arcs))
            entries.append(states)
        r.expect_token("</Topology>")
        return phones, phone2idx, entries, hmm

    @staticmethod
    def _read_topology_text(r):
        entries, phone2idx, phones = [], [], []
        while True:
            start = r.pos
            tok = r.read_token("<TopologyEntry> or </Topology>")
            if tok == "</Topology>":
                break
            if tok != "<TopologyEntry>":
                raise r.error("<TopologyEntry> or </Topology>", repr(tok), at=start)
            r.expect_token("<ForPhones>")
            entry_phones = []
            while r.peek_token() != "</ForPhones>":
                entry_phones.append(r.read_int("a phone id"))
            r.expect_token("</ForPhones>")
            states = []
            start = r.pos
            tok = r.read_token("<State> or </TopologyEntry>")
            while tok != "</TopologyEntry>":
                if tok != "<State>":
                    raise r.error("<State> or </TopologyEntry>", repr(tok), at=start)
                num = r.read_int("state index")
                if num != len(states):
                    raise r.error(f"state {len(states)}", str(num), at=start)
                tok = r.read_token("a state field")
                fwd = loop = -1
                if tok == "<PdfClass>":
                    fwd = loop = r.read_int("pdf class")
                    tok = r.read_token("a state field")
                elif tok == "<ForwardPdfClass>":
                    fwd = r.read_int("forward pdf class")
                    r.expect_token("<SelfLoopPdfClass>")
                    loop = r.read_int("self-loop pdf class")
                    tok = r.read_token("a state field")
                arcs = []
                while tok == "<Transition>":
                    arcs.append((r.read_int("transition destination"),
                                 np.float32(r.read_float("transition probability"))))
                    start = r.pos
                    tok = r.read_token("<Transition> or </State>")
                if tok != "</State>":
                    raise r.error("</State>", repr(tok), at=start)
                states.append((fwd, loop, arcs))
                start = r.pos
                tok = r.read_token("<State> or </TopologyEntry>")
            idx = len(entries)
            entries.append(states)
            for p in entry_phones:
                if p <= 0 or p > 10_000_000:
                    raise r.error("a phone id in 1..10000000", str(p))
                if len(phone2idx) <= p:
                    phone2idx.extend([-1] * (p + 1 - len(phone2idx)))
                if phone2idx[p] != -1:
                    raise r.error("each phone in one topology entry", f"phone {p} twice")
                phone2idx[p] = idx
                phones.append(p)
        return sorted(phones), phone2idx, entries

    # --- writing ---------------------------------------------------------------
    def write(self, w) -> None:
        hmm = self.is_hmm
        w.write_token("<TransitionModel>")
        w.newline()
        w.write_token("<Topology>")
        if w.binary:
            w.write_int_vector(np.asarray(self.phones, dtype=np.int32))
            w.write_int_vector(np.asarray(self.phone2idx, dtype=np.int32))
            if not hmm:
                w.write_int(-1)
            w.write_int(len(self.entries))
            for entry in self.entries:
                w.write_int(len(entry))
                for fwd, loop, arcs in entry:
                    w.write_int(fwd)
                    if not hmm:
                        w.write_int(loop)
                    w.write_int(len(arcs))
                    for dst, prob in arcs:
                        w.write_int(dst)
                        w.write_float(prob)
        else:
            w.raw(b"\n")
            for i, entry in enumerate(self.entries):
                w.write_token("<TopologyEntry>")
                w.raw(b"\n")
                w.write_token("<ForPhones>")
                w.raw(b"\n" + b"".join(b"%d " % p for p, e in enumerate(self.phone2idx) if e == i)
                      + b"\n")
                w.write_token("</ForPhones>")
                w.raw(b"\n")
                for j, (fwd, loop, arcs) in enumerate(entry):
                    w.write_token("<State>")
                    w.write_int(j)
                    if fwd != -1:
                        if hmm:
                            w.write_token("<PdfClass>")
                            w.write_int(fwd)
                        else:
                            w.write_token("<ForwardPdfClass>")
                            w.write_int(fwd)
                            w.write_token("<SelfLoopPdfClass>")
                            w.write_int(loop)
                    for dst, prob in arcs:
                        w.write_token("<Transition>")
                        w.write_int(dst)
                        w.write_float(prob)
                    w.write_token("</State>")
                    w.raw(b"\n")
                w.write_token("</TopologyEntry>")
                w.raw(b"\n")
        w.write_token("</Topology>")
        w.newline()
        w.write_token("<Triples>" if hmm else "<Tuples>")
        w.write_int(len(self.tuples))
        w.newline()
        cols = self.tuples[:, :3] if hmm else self.tuples
        if w.binary:
            rec = np.empty((cols.size, 5), dtype=np.uint8)
            rec[:, 0] = 4
            rec[:, 1:] = np.ascontiguousarray(cols, dtype="<i4").reshape(-1, 1).view(np.uint8)
            w.raw(rec.tobytes())
        else:
            w.raw(b"".join(b" ".join(b"%d" % v for v in row) + b" \n" for row in cols.tolist()))
        w.write_token("</Triples>" if hmm else "</Tuples>")
        w.newline()
        w.write_token("<LogProbs>")
        w.newline()
        w.write_vector(self.log_probs)
        w.write_token("</LogProbs>")
        w.newline()
        w.write_token("</TransitionModel>")
        w.newline()


def _count(r, n: int, what: str) -> int:
    if not 0 <= n <= 10_000_000 or (r.binary and n > len(r.buf) - r.pos):
        raise r.error(f"a plausible number of {what}", str(n))
    return n
