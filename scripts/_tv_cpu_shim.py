"""Let PyPI's CUDA-built torchvision import beside a CPU-only torch.

torchvision registers fake kernels for torchvision::nms/qnms even when its compiled
ops cannot load (they link against libtorch_cuda). Defining the two schemas first
makes `import torchvision` succeed; its C++ ops stay unusable, which nothing here needs.
Loaded from a .pth file; torch is imported only when torchvision is first imported.
"""
import importlib.abc
import sys

_library = None


class _CpuTorchvisionFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        try:
            import torch

            if torch.version.cuda is None and torch.version.hip is None:
                global _library
                _library = torch.library.Library("torchvision", "DEF")
                _library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                _library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except Exception:  # a CUDA torch or an older torchvision: nothing to patch
            pass
        return None


sys.meta_path.insert(0, _CpuTorchvisionFinder())
