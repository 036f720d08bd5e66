"""ComfyUI-PAS: PAS sampling correction (Wang et al., ICML 2025) as ComfyUI nodes.

ComfyUI imports this folder as a module named after the folder; everything inside uses relative imports
because ComfyUI's own top-level modules (nodes, utils, server, ...) would shadow absolute ones.
"""
from comfy_api.latest import ComfyExtension, io

from .comfy_bridge import register_model_folder
from .demo_nodes import DEMO_NODES
from .nodes import NODES

register_model_folder()

# Served by ComfyUI at /extensions/<pack folder>/; web/docs/<node id>.md are the frontend's node help pages.
WEB_DIRECTORY = "./web"


class PASExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES) + list(DEMO_NODES)


async def comfy_entrypoint() -> PASExtension:
    return PASExtension()
