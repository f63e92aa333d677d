"""Interoperability: import reference I-JEPA checkpoints, export to and import from Hugging Face.

    from openjepa.interop import import_reference, export_hf, import_hf, export_safetensors
    import_reference("IN1K-vit.h.14-300e.pth.tar", "runs/ijepa-h14")   # reference .pth.tar → run folder
    export_hf("runs/ijepa-h14", "hf/ijepa-h14")                        # → transformers.IJepaModel folder
    import_hf("hf/ijepa-h14", "runs/from-hf")                          # IJepaModel folder → run folder
    export_safetensors("runs/demo", "exports/demo.safetensors")        # bare weights + architecture JSON

The Hugging Face functions need ``safetensors`` (``pip install 'openjepa[hf]'``); it is imported when
they are called, not here.
"""

from openjepa.interop.hf import export_hf, import_hf
from openjepa.interop.reference import import_reference
from openjepa.interop.safetensors import export_safetensors, load_safetensors_encoder

__all__ = ["export_hf", "export_safetensors", "import_hf", "import_reference", "load_safetensors_encoder"]
