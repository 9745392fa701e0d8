"""What ``pack`` reports: per weight matrix, the rest of the model, the total, and the
sizes a user would get from gzip -9 and xz -9 on the same model file."""
from __future__ import annotations

import gzip
import lzma
from dataclasses import asdict, dataclass, field


@dataclass
class LayerRow:
    """One packed weight matrix."""
    layer: str               # component name
    field: str               # its matrix field, e.g. <LinearParams>
    rows: int
    cols: int
    bits: int                # requested: at most 2**bits codebook values
    codebook: int            # codebook values actually used
    bytes_before: int        # the matrix's values in the Kaldi file
    bytes_after: int         # its record in the pack (names, codebook, coded indices)
    rel_error: float         # ||W - Q|| / ||W||
    pruned: int = 0          # weights set to exactly 0 by --prune-threshold
    out_error: float | None = None   # with calibration: sqrt(tr(E H E^T) / tr(W H W^T))

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.bytes_after / max(1, self.rows * self.cols)


@dataclass
class PackReport:
    bits: int
    prune_threshold: float
    layers: list[LayerRow]
    total_before: int        # the model's Kaldi binary file
    total_after: int         # the .kcz file
    peers: dict[str, int] = field(default_factory=dict)   # "gzip -9"/"xz -9" -> bytes

    @property
    def other_before(self) -> int:
        """Everything stored exactly: transition model, config, biases, statistics..."""
        return self.total_before - sum(r.bytes_before for r in self.layers)

    @property
    def other_after(self) -> int:
        return self.total_after - sum(r.bytes_after for r in self.layers)

    def to_dict(self) -> dict:
        return {"bits": self.bits, "prune_threshold": self.prune_threshold,
                "layers": [asdict(r) for r in self.layers],
                "other_before": self.other_before, "other_after": self.other_after,
                "total_before": self.total_before, "total_after": self.total_after,
                "ratio": self.total_after / self.total_before, "peers": dict(self.peers)}

    def format_table(self) -> str:
        head = (f"{'layer':<24} {'shape':>10} {'bits':>4} {'codebook':>8} {'bytes before':>12} "
                f"{'bytes after':>11} {'ratio':>6} {'bits/w':>6} {'rel.error':>9}")
        calibrated = any(r.out_error is not None for r in self.layers)
        if calibrated:
            head += f" {'rel.err(out)':>12}"
        lines = [head]
        for r in self.layers:
            lines.append(f"{r.layer:<24} {f'{r.rows}x{r.cols}':>10} {r.bits:>4} {r.codebook:>8} "
                         f"{r.bytes_before:>12} {r.bytes_after:>11} "
                         f"{r.bytes_after / max(1, r.bytes_before):>6.3f} "
                         f"{r.bits_per_weight:>6.2f} {r.rel_error:>9.4f}"
                         + (f" {r.out_error:>12.4f}" if r.out_error is not None
                            else " " * 13 if calibrated else ""))

        def total(name: str, before: int, after: int) -> str:
            return (f"{name:<48} {before:>12} {after:>11} {after / max(1, before):>6.3f}")
        lines.append(total("other (stored exactly, zstd)", self.other_before, self.other_after))
        lines.append(total("total (.kcz)", self.total_before, self.total_after))
        for name, size in self.peers.items():
            lines.append(total(f"peer: {name} of the model file", self.total_before, size))
        return "\n".join(lines) + "\n"


def peer_sizes(data: bytes) -> dict[str, int]:
    """The model file's size under gzip -9 and xz -9 (Python's gzip and lzma)."""
    return {"gzip -9": len(gzip.compress(data, compresslevel=9, mtime=0)),
            "xz -9": len(lzma.compress(data, format=lzma.FORMAT_XZ, preset=9))}
