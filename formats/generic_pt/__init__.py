"""The kernel's generic page-table framework (drivers/iommu/generic_pt, "iommupt"): amdv1 and
amdv1-mock (amdv1.py), vtdss (vtdss.py), x86-64 (x86_64.py), riscv64 (riscv64.py), on the
shared configuration, geometry, dynamic top and legacy quirks of common.py."""
