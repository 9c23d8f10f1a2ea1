"""RISC-V IOMMU first-stage table, 64-bit (generic_pt fmt/riscv.h with PT_FMT_VARIANT 64,
iommu_riscv64.c): Sv39, Sv48, Sv57 with Svnapot 64 KiB leaves (privileged spec 12.3-12.6, 13).

Levels equal the spec's i (0 = 4K PTEs); the top is 2, 3 or 4 from the VA width 39/48/57.
Bits: V 0, R 1, W 2, X 3, U 4, G 5, A 6, D 7, RSW [9:8], PPN [53:10], PBMT [62:61], N 63.
V with R=W=X=0 above level 0 is a table; every level can hold leaves. A NAPOT 64K leaf is 16
identical level-0 items with N set and ppn[3:0] = 1000b (RISCVPT_PPN64_64K_SZ).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..base import (
    INVALID,
    IOMMU_NOEXEC,
    IOMMU_READ,
    IOMMU_WRITE,
    LEAF,
    TABLE,
    U64,
    ConfigError,
    Descriptor,
    Level,
)
from ..lazy import np
from .common import GenericPt, genmask

V, R, W, X, U, G, A, D = (1 << i for i in range(8))  # RISCVPT_V .. RISCVPT_D
RSW = genmask(9, 8)
PPN = genmask(53, 10)  # RISCVPT_PPN64
PPN_64K = genmask(53, 14)  # RISCVPT_PPN64_64K
PPN_64K_SZ = 1 << 13  # RISCVPT_PPN64_64K_SZ: ppn[3] of a 64K NAPOT leaf
PBMT = genmask(62, 61)  # RISCVPT_PBMT
N = 1 << 63  # RISCVPT_N
RWX = R | W | X

# iosatp / fsc (riscv/iommu-bits.h RISCV_IOMMU_ATP_*): MODE [63:60], PPN [43:0]
ATP_MODE_SHIFT = 60
ATP_PPN = genmask(43, 0)
SV_MODES = {8: 39, 9: 48, 10: 57}  # RISCV_IOMMU_DC_FSC_IOSATP_MODE_SV39/48/57
SV_TOP = {39: 2, 48: 3, 57: 4}


class RiscV64(GenericPt):
    name = "riscv64"
    description = "RISC-V IOMMU Sv39/Sv48/Sv57 (generic_pt riscv_64): sign-extended, Svnapot 64K"
    prefix = "riscv_64"
    root_register = "iosatp"
    max_top_level = 4
    max_va_lg2 = 57
    max_oa_lg2 = 56
    top_phys_mask = genmask(55, 12)  # "fsc.PPN is 44 bits wide"
    supported_features: ClassVar[tuple[str, ...]] = ("sign-extend", "flush-range", "riscv-svnapot-64k")
    fmt_features: ClassVar[tuple[str, ...]] = ("riscv-svnapot-64k",)
    prot_key_mask: ClassVar[int | None] = RWX
    config_defaults: ClassVar[dict[str, Any]] = {
        "levels": None, "vasz": None, "oasz": 56,
        "features": ["sign-extend", "flush-range", "riscv-svnapot-64k"], "pgsize_bitmap": None,
    }

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.napot = "riscv-svnapot-64k" in self.features

    def default_levels(self, vasz: int | None) -> int:
        if vasz is None:
            return 4
        return SV_TOP.get(vasz, 3) + 1

    def default_vasz(self, levels: int) -> int:
        return {3: 39, 4: 48, 5: 57}.get(levels, 48)

    def fmt_init(self, top: int, vasz: int) -> int:
        """riscvpt_iommu_fmt_init: hw_max_vasz_lg2 must be 39, 48 or 57 (top 2, 3, 4)."""
        if vasz not in SV_TOP:
            raise ConfigError("vasz", f"riscv64 takes vasz 39, 48 or 57 (Sv39/48/57), not {vasz} "
                                      f"(riscvpt_iommu_fmt_init: -EINVAL)")
        if SV_TOP[vasz] != top:
            raise ConfigError("levels", f"Sv{vasz} has {SV_TOP[vasz] + 1} levels, not {top + 1}")
        return vasz

    def contig_count_lg2(self, level: int) -> int:
        return 4 if level == 0 and "riscv-svnapot-64k" in self.features else 0  # riscvpt_contig_count_lg2

    # -- roots -------------------------------------------------------------------------------------
    def root_from_register(self, value: int) -> list[int]:
        """iosatp (the device context's fsc with DC.tc.PDTV 0): MODE [63:60] 8/9/10 = Sv39/48/57,
        PPN [43:0] = the root table >> 12 (riscv_iommu_attach_paging_domain)."""
        mode = value >> ATP_MODE_SHIFT
        if mode not in SV_MODES:
            raise ValueError(f"iosatp {value:#x}: MODE {mode} is not Sv39 (8), Sv48 (9) or Sv57 (10)")
        vasz = SV_MODES[mode]
        if vasz != self.max_vasz:
            self.reconfigure(SV_TOP[vasz] + 1, vasz)
            self.napot = "riscv-svnapot-64k" in self.features
        return [(value & ATP_PPN) << 12]

    def iosatp(self, root: int) -> int:
        """The fsc value the driver writes (pt_iommu_riscv_64_hw_info: mode top + 6, ppn)."""
        return ((self.top_level + 6) << ATP_MODE_SHIFT) | (root >> 12)

    # -- per-entry hooks ---------------------------------------------------------------------
    def classify(self, raw: int, lvl: Level) -> int:
        """riscvpt_load_entry_raw: V clear is empty; level 0 or any of R/W/X is a leaf."""
        if not raw & V:
            return INVALID
        if lvl.num == 0 or raw & RWX:
            return LEAF
        return TABLE

    def next_table(self, raw: int, lvl: Level) -> int:
        return ((raw & PPN) >> 10) << 12  # riscvpt_table_pa

    def leaf_size(self, raw: int, lvl: Level) -> int:
        """riscvpt_entry_num_contig_lg2 tests N with the compile-time feature (supported in
        riscv64), so N means 16 items at any level."""
        return lvl.block << 4 if raw & N else lvl.block

    def leaf_phys(self, raw: int, lvl: Level) -> int:
        """riscvpt_entry_oa: with the runtime Svnapot feature and N, PPN[53:14] << 16."""
        if self.napot and raw & N:
            return ((raw & PPN_64K) >> 14) << 16
        return ((raw & PPN) >> 10) << 12

    def leaf_prot(self, raw: int, lvl: Level) -> int:
        return ((IOMMU_READ if raw & R else 0) | (IOMMU_WRITE if raw & W else 0)
                | (0 if raw & X else IOMMU_NOEXEC))

    def reserved_bits(self, raw: int, lvl: Level, kind: int) -> int:
        if kind == TABLE:
            return raw & ~(V | PPN) & U64  # riscvpt_install_table: V | PPN only (A, D, U must be 0)
        if kind == LEAF:
            ok = V | R | W | X | U | A | D | PPN | N  # N is judged below
            bad = raw & ~ok & U64
            if raw & N:
                if lvl.num == 0 and self.napot:
                    if (raw >> 10) & 0xF != 0b1000:
                        bad |= raw & genmask(13, 10)  # only the 64K NAPOT code ppn[3:0] = 1000b exists
                else:
                    bad |= N
            elif lvl.num:
                bad |= raw & genmask(10 + 9 * lvl.num - 1, 10)  # a misaligned superpage faults
            if raw & W and not raw & R:
                bad |= W  # W without R is reserved (privileged spec 12.3.1)
            return bad
        return raw & U64

    def leaf_vec(self, r: np.ndarray, lvl: Level) -> np.ndarray:
        if lvl.num == 0:
            return np.ones(len(r), dtype=bool)
        return (r & np.uint64(RWX)) != 0

    def next_table_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        return ((raw.astype(np.uint64, copy=False) & np.uint64(PPN)) >> np.uint64(10)) << np.uint64(12)

    def leaf_size_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64, copy=False)
        return np.where((r & np.uint64(N)) != 0, np.uint64(lvl.block << 4), np.uint64(lvl.block)).astype(np.uint64)

    def leaf_phys_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64, copy=False)
        pa = ((r & np.uint64(PPN)) >> np.uint64(10)) << np.uint64(12)
        if self.napot:
            pa64 = ((r & np.uint64(PPN_64K)) >> np.uint64(14)) << np.uint64(16)
            pa = np.where((r & np.uint64(N)) != 0, pa64, pa)
        return pa.astype(np.uint64)

    def leaf_prot_vec(self, raw: np.ndarray, lvl: Level) -> np.ndarray:
        r = raw.astype(np.uint64, copy=False)
        return (((r & np.uint64(R)) != 0).astype(np.int64) * IOMMU_READ
                | ((r & np.uint64(W)) != 0).astype(np.int64) * IOMMU_WRITE
                | ((r & np.uint64(X)) == 0).astype(np.int64) * IOMMU_NOEXEC)

    # -- encoder -----------------------------------------------------------------------------------
    def set_prot(self, prot: int) -> int:
        """riscvpt_iommu_set_prot: A|U always, W|R|D for WRITE, R for READ, X unless NOEXEC."""
        pte = A | U
        if prot & IOMMU_WRITE:
            pte |= W | R | D
        if prot & IOMMU_READ:
            pte |= R
        if not prot & IOMMU_NOEXEC:
            pte |= X
        if not pte & RWX:
            raise ValueError("prot grants neither read, write nor execute (-EOPNOTSUPP)")
        return pte

    def encode_table(self, table: int, lvl: Level) -> int:
        return V | (((table >> 12) << 10) & PPN)  # riscvpt_install_table

    def encode_leaf(self, phys: int, pgsize: int, lvl: Level, prot: int) -> int:
        """riscvpt_install_leaf_entry: V | PPN | attrs; a level-0 64K leaf adds N and
        ppn[3] (bit 13) and is written to all 16 items."""
        pte = V | (((phys >> 12) << 10) & PPN) | self.set_prot(prot)
        if self.napot and lvl.num == 0 and pgsize != lvl.block:
            pte |= N | PPN_64K_SZ
        return pte

    # -- explain -----------------------------------------------------------------------------------
    def make_schema(self, lvl: Level, kind: int) -> Descriptor:
        if kind == TABLE:
            return Descriptor("Sv PTE (pointer to next level)", 64, ("n", 63, 63), ("pbmt", 62, 61),
                              ("ppn", 53, 10), ("rsw", 9, 8), ("d", 7, 7), ("a", 6, 6), ("g", 5, 5), ("u", 4, 4),
                              ("x", 3, 3), ("w", 2, 2), ("r", 1, 1), ("v", 0, 0))
        if kind == LEAF:
            return Descriptor("Sv PTE (leaf)", 64, ("n", 63, 63), ("pbmt", 62, 61), ("ppn", 53, 10), ("rsw", 9, 8),
                              ("d", 7, 7), ("a", 6, 6), ("g", 5, 5), ("u", 4, 4), ("x", 3, 3), ("w", 2, 2),
                              ("r", 1, 1), ("v", 0, 0))
        return Descriptor("Sv PTE (invalid)", 64, ("v", 0, 0))

    def fields(self, raw: int, lvl: Level, kind: int) -> dict[str, Any]:
        out = super().fields(raw, lvl, kind)
        if kind == LEAF and raw & N:
            # the NAPOT view of the same bits: ppn[43:4] and the size code ppn[3:0]
            napot = self._schemas.get((-1, LEAF, 1))
            if napot is None:
                napot = self._schemas[(-1, LEAF, 1)] = Descriptor(
                    "Svnapot", 64, ("ppn_64k", 53, 14), ("napot_code", 13, 10))
            out.update(napot.decode(raw))
        return out

    def note(self, raw: int, lvl: Level, kind: int) -> str:
        text = super().note(raw, lvl, kind)
        if kind == LEAF and raw & N:
            text += "; Svnapot 64K (N, ppn[3:0] = 1000b)"
        return text


DRIVERS: dict[str, dict[str, Any]] = {
    "riscv": {
        "format": "riscv64",
        "config": {"levels": None, "vasz": 48, "oasz": 56, "features": ["sign-extend", "flush-range",
                                                                          "riscv-svnapot-64k"]},
        "description": "RISC-V IOMMU (riscv_iommu_alloc_paging_domain: Sv57, Sv48 or Sv39 as the capabilities "
                       "allow, 56-bit OA, sign-extend, Svnapot 64K (mandatory, IOMMU spec 6.4); root in "
                       "fsc = iosatp MODE | PPN)",
    },
}
