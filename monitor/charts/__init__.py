"""Control charts: one module per family, all built on the kernel machinery in ``base``."""

from monitor.charts.base import (
    BatchResult,
    Chart,
    ChartPoint,
    Kernel,
    KernelChart,
    batch,
    kernel_from_dict,
    kernel_to_dict,
)
from monitor.charts.cusum import CusumKernel
from monitor.charts.ewma import EwmaKernel
from monitor.charts.multivariate import HotellingKernel, MewmaKernel
from monitor.charts.selfstart import SelfStartKernel, q_sequence, q_statistic
from monitor.charts.shewhart import IndividualsKernel
from monitor.charts.spatial import ClusterAreaKernel, cluster_area_limit, largest_cluster_area

__all__ = [
    "BatchResult",
    "Chart",
    "ChartPoint",
    "ClusterAreaKernel",
    "CusumKernel",
    "EwmaKernel",
    "HotellingKernel",
    "IndividualsKernel",
    "Kernel",
    "KernelChart",
    "MewmaKernel",
    "SelfStartKernel",
    "batch",
    "cluster_area_limit",
    "kernel_from_dict",
    "kernel_to_dict",
    "largest_cluster_area",
    "q_sequence",
    "q_statistic",
]
