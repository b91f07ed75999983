"""Exactly-once merge of at-least-once deltas (pure).

Workers may send a delta more than once (a lost acknowledgement, a Redis
restart) and the Manager may read the stream again; each (worker, seq) is
merged once. The acknowledgement is the contiguous watermark, so a Worker
re-sends anything above it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class WorkerLedger:
    watermark: int = 0  # every seq <= watermark is merged
    above: set[int] = field(default_factory=set)  # merged seqs above the watermark
    final_seq: int | None = None

    def accept(self, seq: int) -> bool:
        """True the first time ``seq`` is seen."""
        if seq <= self.watermark or seq in self.above:
            return False
        self.above.add(seq)
        while self.watermark + 1 in self.above:
            self.watermark += 1
            self.above.discard(self.watermark)
        return True

    @property
    def complete(self) -> bool:
        """The final delta and everything before it are merged."""
        return self.final_seq is not None and self.watermark >= self.final_seq
