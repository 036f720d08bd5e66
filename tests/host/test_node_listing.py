"""Where the PAS nodes are listed and how they are found: the category follows the host's own sampler
folders, and search aliases reach hosts whose io.Schema has `search_aliases` (ComfyUI 0.3.75, the host
here, has none: there the schema is built without them). The newer-host case is a dataclass subclass of
this host's Schema with that one field added, as newer ComfyUI declares it."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from comfy_api.latest import io
from comfy_extras.nodes_custom_sampler import KSamplerSelect

NODE_IDS = ("PAS_Sampler", "PAS_Trainer", "PAS_LoadCoordinates")


def pas_nodes(nodes):
    return [nodes.PASSampler, nodes.PASTrainer, nodes.PASLoadCoordinates]


def test_category_is_beside_the_hosts_sampler_folder(nodes):
    samplers = KSamplerSelect.define_schema().category
    assert nodes.CATEGORY == samplers.rsplit("/", 1)[0] + "/pas"
    if samplers == "sampling/custom_sampling/samplers":  # ComfyUI 0.3.x
        assert nodes.CATEGORY == "sampling/custom_sampling/pas"
    assert all(node.define_schema().category == nodes.CATEGORY for node in pas_nodes(nodes))


def test_schemas_build_on_this_host(nodes):
    host_has_aliases = "search_aliases" in io.Schema.__dataclass_fields__
    for node, node_id in zip(pas_nodes(nodes), NODE_IDS, strict=True):
        built = node.define_schema()
        assert type(built) is io.Schema and built.node_id == node_id
        if host_has_aliases:
            assert "pas" in built.search_aliases
        info = node.GET_NODE_INFO_V1()  # what /object_info serves
        assert info["category"] == nodes.CATEGORY


def test_aliases_reach_a_host_whose_schema_has_them(nodes, monkeypatch):
    if "search_aliases" in io.Schema.__dataclass_fields__:
        pytest.skip("this host's Schema has search_aliases; test_schemas_build_on_this_host covers it")

    @dataclasses.dataclass
    class NewerSchema(io.Schema):
        search_aliases: list[str] = dataclasses.field(default_factory=list)

    monkeypatch.setattr(io, "Schema", NewerSchema)
    aliases = {node.define_schema().node_id: node.define_schema().search_aliases for node in pas_nodes(nodes)}
    assert all("pas" in found for found in aliases.values())
    assert "ddim correction" in aliases["PAS_Sampler"]
    assert "sampler training" in aliases["PAS_Trainer"]


WORKFLOWS = sorted((Path(__file__).resolve().parents[2] / "workflows").glob("*.json"))


def widget_names(info) -> list[str]:
    """The node's widget inputs in the order /object_info gives them (links only: no widget)."""
    order = info.get("input_order", {})
    names = []
    for section in ("required", "optional"):
        specs = info["input"].get(section, {})
        for name in order.get(section, list(specs)):
            kind = specs[name][0]
            if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                names.append(name)
    return names


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflows_give_every_pas_widget_in_the_nodes_order(nodes, path):
    """A shared workflow stores widget values by position: each PAS node in workflows/ must list this
    pack's widgets, in order, with one value each (plus the seed's 'control after generate')."""
    infos = {node.define_schema().node_id: node.GET_NODE_INFO_V1() for node in pas_nodes(nodes)}
    checked = 0
    for node in json.loads(path.read_text())["nodes"]:
        info = infos.get(node["type"])
        if info is None:
            continue
        expected = widget_names(info)
        listed = [entry["name"] for entry in node.get("inputs", []) if "widget" in entry]
        assert listed == expected, f"{path.name} node {node['id']} ({node['type']})"
        controls = sum(1 for section in ("required", "optional") for spec in info["input"].get(section, {}).values()
                       if len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("control_after_generate"))
        assert len(node["widgets_values"]) == len(expected) + controls, f"{path.name} node {node['id']}"
        checked += 1
    assert checked > 0 or "PAS" not in path.read_text()
