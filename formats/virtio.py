"""virtio-iommu domains (drivers/iommu/virtio-iommu.c): no page table in the guest.

The guest keeps an interval tree of `struct viommu_mapping` {paddr, iova [start, last], flags},
the shadow of the VIRTIO_IOMMU_T_MAP requests it sent; the host owns the real tables. Each
`map_pages` call is one node (`viommu_add_mapping`) of pgsize * pgcount bytes, and the IOMMU core
splits an iommu_map() into such calls with `iommu_pgsize()` over the device's page_size_mask, so
one `mappings:` item can become several nodes. A node is never split: `viommu_del_mappings`
removes every node that starts inside the unmapped range, whole (so an unmap can return more
than asked), and stops at a node that starts before it. `viommu_iova_to_phys` returns
paddr + (iova - start) of the node covering the IOVA, 0 when none does; the length of a mapping
is its whole node.

Flags (VIRTIO_IOMMU_MAP_F_*): READ bit 0, WRITE bit 1, MMIO bit 2 (only with VIRTIO_IOMMU_F_MMIO;
`viommu_map_pages` refuses flags the device lacks).

`MappingWalker` is the Walker interface over such a list of nodes; fsl-pamu reuses it for its
single identity window.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from iommuctl.memory import PhysMem

from .base import (
    IOMMU_MMIO,
    IOMMU_READ,
    IOMMU_WRITE,
    PHYS_ADDR_MAX,
    U64,
    ConfigError,
    Descriptor,
    LeafBatch,
    PageTable,
    Step,
    TopTable,
    Translation,
    iter_bits,
)
from .builder import iommu_pgsize
from .lazy import np

VIRTIO_IOMMU_MAP_F_READ = 1 << 0
VIRTIO_IOMMU_MAP_F_WRITE = 1 << 1
VIRTIO_IOMMU_MAP_F_MMIO = 1 << 2
MAP_FLAGS = Descriptor("virtio_iommu_map_flags", 32, ("mmio", 2, 2), ("write", 1, 1), ("read", 0, 0))
LEVEL = 1  # a node is the only "level"


def prot_to_flags(prot: int) -> int:
    """viommu_map_pages: IOMMU_READ/WRITE/MMIO -> VIRTIO_IOMMU_MAP_F_*; other prot bits dropped."""
    return ((VIRTIO_IOMMU_MAP_F_READ if prot & IOMMU_READ else 0)
            | (VIRTIO_IOMMU_MAP_F_WRITE if prot & IOMMU_WRITE else 0)
            | (VIRTIO_IOMMU_MAP_F_MMIO if prot & IOMMU_MMIO else 0))


def flags_to_prot(flags: int) -> int:
    return ((IOMMU_READ if flags & VIRTIO_IOMMU_MAP_F_READ else 0)
            | (IOMMU_WRITE if flags & VIRTIO_IOMMU_MAP_F_WRITE else 0)
            | (IOMMU_MMIO if flags & VIRTIO_IOMMU_MAP_F_MMIO else 0))


def _prot_of(flags: np.ndarray) -> np.ndarray:
    """flags_to_prot over an array."""
    prot = ((flags & VIRTIO_IOMMU_MAP_F_READ) * IOMMU_READ
            | ((flags & VIRTIO_IOMMU_MAP_F_WRITE) >> 1) * IOMMU_WRITE
            | ((flags & VIRTIO_IOMMU_MAP_F_MMIO) >> 2) * IOMMU_MMIO)
    return prot.astype(np.int64)  # type: ignore[no-any-return]


class MappingWalker:
    """The Walker interface over non-overlapping nodes (start, last, phys, flags), held as sorted
    numpy arrays so a million scattered pages are arrays, not objects. Lookups are a binary
    search; each counts as one entry read (one node). Unmapping marks nodes dead."""

    def __init__(self, fmt: Any, nodes: list[tuple[int, int, int, int]]) -> None:
        self.fmt = fmt
        self.mem = PhysMem()
        self.roots: list[int] = []
        nodes = sorted(nodes)
        for (s0, l0, _, _), (s1, _, _, _) in zip(nodes, nodes[1:]):
            if s1 <= l0:
                raise ValueError(f"mapping at iova {s1:#x} overlaps the one at {s0:#x}..{l0:#x} "
                                 "(the device refuses an overlapping MAP)")
        self.start = np.array([n[0] for n in nodes], dtype=np.uint64)
        self.last = np.array([n[1] for n in nodes], dtype=np.uint64)
        self.phys = np.array([n[2] for n in nodes], dtype=np.uint64)
        self.flags = np.array([n[3] for n in nodes], dtype=np.int64)
        self.alive = np.ones(len(nodes), dtype=bool)
        self.tops = [TopTable(0, 0, s, s, e) for s, e in fmt.windows]
        self.entries_read = 0

    def __len__(self) -> int:
        return int(self.alive.sum())

    def top_for(self, iova: int) -> TopTable | None:
        for t in self.tops:
            if t.start <= iova < t.end:
                return t
        return None

    def _find(self, iova: int) -> int:
        """Index of the live node covering iova, or -1 (interval_tree_iter_first(iova, iova))."""
        if not 0 <= iova <= U64 or len(self.start) == 0:
            return -1
        i = int(np.searchsorted(self.start, np.uint64(iova), side="right")) - 1
        if i >= 0 and self.alive[i] and iova <= int(self.last[i]):
            return i
        return -1

    def translate(self, iova: int, steps: list[Step] | None = None) -> Translation:
        i = self._find(iova)
        self.entries_read += 1
        if steps is not None:
            steps.append(self.fmt.node_step(iova, self, i))
        if i < 0:
            return Translation(iova, entries_read=1)
        start, last = int(self.start[i]), int(self.last[i])
        flags = int(self.flags[i])
        return Translation(iova, int(self.phys[i]) + iova - start, last - start + 1, LEVEL, flags_to_prot(flags),
                           flags, start, 1)

    def translate_batch(self, iovas: np.ndarray, res: Any) -> None:
        """translate over a uint64 array into a batch.BatchResult: one binary search for all."""
        res.entries_read[:] = 1
        self.entries_read += len(iovas)
        if len(self.start) == 0:
            return
        i = np.searchsorted(self.start, iovas, side="right").astype(np.int64) - 1
        k = np.maximum(i, 0)
        hit = (i >= 0) & self.alive[k] & (iovas <= self.last[k])
        sel = np.flatnonzero(hit)
        k = k[sel]
        start, flags = self.start[k], self.flags[k]
        res.phys[sel] = self.phys[k] + (iovas[sel] - start)
        res.size[sel] = self.last[k] - start + np.uint64(1)  # < 2^64: a mapping's size fits 64 bits
        res.level[sel] = LEVEL
        res.prot[sel] = _prot_of(flags)
        res.raw[sel] = flags.astype(np.uint64)
        res.entry[sel] = start

    def node(self, i: int) -> tuple[int, int, int, int]:
        return int(self.start[i]), int(self.last[i]), int(self.phys[i]), int(self.flags[i])

    def leaves(self, start: int, end: int) -> Iterator[LeafBatch]:
        """The live nodes overlapping [start, end), each one leaf of its whole length."""
        if end <= start or len(self.start) == 0:
            return
        lo = max(int(np.searchsorted(self.start, np.uint64(min(start, U64)), side="right")) - 1, 0)
        hi = int(np.searchsorted(self.start, np.uint64(min(end - 1, U64)), side="right"))
        sel = np.arange(lo, hi)
        sel = sel[self.alive[lo:hi] & (self.last[lo:hi] >= np.uint64(start))]
        if len(sel) == 0:
            return
        flags = self.flags[sel]
        size = self.last[sel] - self.start[sel] + np.uint64(1)
        yield LeafBatch(self.start[sel].copy(), self.phys[sel].copy(), size, _prot_of(flags),
                        flags.astype(np.uint64), LEVEL)

    def iter_leaves(self, start: int, end: int) -> Iterator[tuple[int, int, int, int, int, int]]:
        for b in self.leaves(start, end):
            for i in range(len(b)):
                yield (int(b.iova[i]), int(b.phys[i]), int(b.size[i]), b.level, int(b.prot[i]), int(b.raw[i]))

    def unmap_leaf(self, iova: int, pgsize: int) -> int:
        """viommu_unmap_pages(iova, pgsize): viommu_del_mappings over [iova, iova + pgsize - 1]
        removes each intersecting node that starts at or after iova, whole, and stops at one that
        starts before; the bytes removed, or 0 when they fall short of pgsize."""
        if pgsize <= 0 or len(self.start) == 0:
            return 0
        end = iova + pgsize - 1
        i = max(int(np.searchsorted(self.start, np.uint64(min(iova, U64)), side="right")) - 1, 0)
        removed = 0
        while i < len(self.start) and int(self.start[i]) <= end:
            if self.alive[i] and int(self.last[i]) >= iova:
                if int(self.start[i]) < iova:
                    break  # "Trying to split a mapping?"
                removed += int(self.last[i]) - int(self.start[i]) + 1
                self.alive[i] = False
            i += 1
        return removed if removed >= pgsize else 0


class Virtio(PageTable):
    name = "virtio"
    description = "virtio-iommu: no guest page table, an interval tree of MAP requests (one node per map_pages)"
    kernel_source = "drivers/iommu/virtio-iommu.c"
    config_defaults = {"page_size_mask": 0xFFFF_FFFF_FFFF_F000, "input_start": 0, "input_end": U64, "mmio": False}
    root_register = None
    has_tables = False

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        mask, start, end = config["page_size_mask"], config["input_start"], config["input_end"]
        if not mask or mask >> 64:
            raise ConfigError("page_size_mask", f"{mask:#x}: the device's page_size_mask must be a non-zero "
                                                "64-bit mask (viommu_probe refuses 0)")
        if mask & -mask > 1 << 16:
            raise ConfigError("page_size_mask", f"granule {mask & -mask:#x} is larger than any PAGE_SIZE "
                                                "(viommu_domain_alloc_paging refuses it)")
        if end > U64 or start > end:
            raise ConfigError("input_end", f"input range {start:#x}..{end:#x} is empty or wider than 64 bits")
        self.levels = []
        self.page_sizes = sorted(iter_bits(mask))
        self.oas = 64
        self.windows = [(start, end + 1)]
        self.map_flags = VIRTIO_IOMMU_MAP_F_READ | VIRTIO_IOMMU_MAP_F_WRITE
        if config["mmio"]:
            self.map_flags |= VIRTIO_IOMMU_MAP_F_MMIO

    def nodes_for(self, iova: int, phys: int, size: int, prot: int) -> list[tuple[int, int, int, int]]:
        """The interval-tree nodes one iommu_map() leaves: one per map_pages call."""
        minpg = min(self.page_sizes)
        if size <= 0:
            raise ValueError("size must be positive")
        if (iova | phys | size) & (minpg - 1):
            raise ValueError(f"iova {iova:#x}, phys {phys:#x} and size {size:#x} must be aligned to the "
                             f"smallest page size {minpg:#x}")
        lo, hi = self.windows[0]
        if iova < lo or iova + size > hi:
            raise ValueError(f"iova range {iova:#x}+{size:#x} is outside the device's input range "
                             f"{lo:#x}..{hi - 1:#x}")
        if phys + size > 1 << 64:
            raise ValueError(f"phys {phys:#x}+{size:#x} passes 2^64")
        flags = prot_to_flags(prot)
        if flags & ~self.map_flags:
            raise ValueError("IOMMU_MMIO needs a device with VIRTIO_IOMMU_F_MMIO (config mmio: true)")
        out = []
        while size:
            pgsize, count = iommu_pgsize(self.pgsize_bitmap, iova, phys, size)
            n = pgsize * count
            out.append((iova, iova + n - 1, phys, flags))
            iova, phys, size = iova + n, phys + n, size - n
        return out

    def tableless_walker(self, mappings: list[tuple[int, int, int, int]]) -> MappingWalker:
        nodes = [n for m in mappings for n in self.nodes_for(*m)]
        return MappingWalker(self, nodes)

    def node_step(self, iova: int, w: MappingWalker, i: int) -> Step:
        """Explain: the interval-tree node covering iova (interval_tree_iter_first)."""
        if i < 0:
            return Step(LEVEL, 0, -1, 0, 0, "invalid", {}, f"no mapping covers {iova:#x} "
                        f"({len(w)} nodes in the tree)")
        start, last, phys, flags = w.node(i)
        fields: dict[str, Any] = {"virt_start": start, "virt_end": last, "phys_start": phys}
        fields.update(MAP_FLAGS.decode(flags))
        return Step(LEVEL, 0, i, start, flags, "mapping", fields,
                    f"node {i}: [{start:#x}, {last:#x}] -> {phys:#x}, {last - start + 1:#x} bytes as one MAP")

    def schema(self, lvl: Any, kind: int) -> Descriptor | None:
        return MAP_FLAGS

    def legacy_iova_to_phys(self, iova: int, t: Translation) -> int:
        """viommu_iova_to_phys: paddr + (iova - start) of the covering node, 0 when none does."""
        return t.phys if t.mapped and t.phys != PHYS_ADDR_MAX else 0

    def legacy_iova_to_phys_vec(self, iova: np.ndarray, phys: np.ndarray, size: np.ndarray, level: np.ndarray,
                                raw: np.ndarray) -> np.ndarray:
        ok = (size != 0) & (phys != np.uint64(PHYS_ADDR_MAX))
        return np.where(ok, phys, np.uint64(0)).astype(np.uint64)  # type: ignore[no-any-return]

    def check_map(self, iova: int, phys: int, size: int, prot: int) -> None:
        self.nodes_for(iova, phys, size, prot)


DRIVERS = {
    "virtio": {
        "format": "virtio",
        "config": {},
        "description": "virtio-iommu (virtio-iommu.c): mapping tree, the host owns the tables",
    },
}
