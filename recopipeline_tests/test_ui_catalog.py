"""What the Dagster UI and the docs show about the definitions stays complete and true.

Every asset carries a description, owners, a group, kinds and a code reference; jobs, schedules and sensors are
described; the architecture diagram in docs/design.md draws the asset graph's real dependencies.
"""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg

DESIGN = Path(__file__).parents[1] / "docs" / "design.md"
# Every asset of these groups must be drawn; assets of other groups may be drawn (then truthfully).
DRAWN_GROUPS = ("sources", "behavior", "similarity", "recommendations", "publish")


def asset_nodes(definitions: dg.Definitions) -> dict:
    """Asset name -> its node in the resolved asset graph (description, owners, group, kinds, parents)."""
    graph = definitions.resolve_asset_graph()
    return {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}


def test_every_asset_is_described_owned_grouped_and_linked_to_code(definitions):
    incomplete = {}
    for name, node in asset_nodes(definitions).items():
        missing = [
            label
            for label, present in (
                ("description", bool(node.description)),
                ("owners", bool(node.owners)),
                ("group", node.group_name not in (None, "default")),
                ("kinds", bool(node.kinds)),
                ("code reference", "dagster/code_references" in node.metadata),
            )
            if not present
        ]
        if missing:
            incomplete[name] = missing
    assert not incomplete


def test_every_job_schedule_and_sensor_is_described(definitions):
    jobs = [job for job in definitions.resolve_all_job_defs() if not job.name.startswith("__")]
    automations = [*(definitions.schedules or []), *(definitions.sensors or [])]
    assert jobs
    assert [item.name for item in [*jobs, *automations] if not item.description] == []


def test_every_asset_check_is_described(definitions):
    graph = definitions.resolve_asset_graph()
    undescribed = [
        key.to_user_string() for key in graph.asset_check_keys if not graph.get_check_spec(key).description
    ]
    assert undescribed == []


class Diagram:
    """The nodes (with their subgraph) and edges of a Mermaid `graph` block."""

    def __init__(self, text: str):
        self.groups: dict[str, str] = {}
        self.edges: set[tuple[str, str]] = set()
        group = None
        for raw in text.splitlines():
            line = raw.split("%%")[0].strip()
            if not line or line.startswith(("graph", "flowchart", "classDef", "class ", "style", "click")):
                continue
            if line.startswith("subgraph"):
                group = line.split()[1].split("[")[0]
                continue
            if line == "end":
                group = None
                continue
            if "-->" in line:
                stages = [self._names(part) for part in re.split(r"-->(?:\|[^|]*\|)?", line)]
                for sources, targets in zip(stages, stages[1:]):
                    self.edges |= {(s, t) for s in sources for t in targets}
                for name in (n for stage in stages for n in stage):
                    self.groups.setdefault(name, group)
                continue
            for name in self._names(line.replace(";", "&")):
                self.groups[name] = group

    @staticmethod
    def _names(part: str) -> list[str]:
        """Node ids in `a & b[label]`: labels in brackets are dropped."""
        return [re.sub(r"[\[({].*$", "", name.strip()) for name in part.split("&") if name.strip()]


def design_diagram() -> Diagram:
    blocks = re.findall(r"```mermaid\n(.*?)```", DESIGN.read_text(), flags=re.S)
    assert blocks, "docs/design.md has no Mermaid diagram"
    return Diagram(blocks[0])


def test_the_diagram_parser_reads_chains_groups_and_labels():
    diagram = Diagram(
        "graph LR\n  subgraph left\n    a; b[Bee]\n  end\n  a --> b & c --> d  %% note\n  e -->|label| f\n"
    )
    assert diagram.edges == {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("e", "f")}
    assert diagram.groups == {"a": "left", "b": "left", "c": None, "d": None, "e": None, "f": None}


def test_the_architecture_diagram_draws_every_pipeline_asset_in_its_group(definitions):
    diagram = design_diagram()
    nodes = asset_nodes(definitions)
    assert sorted(set(diagram.groups) - set(nodes)) == [], "the diagram draws names that are not assets"
    required = {name for name, node in nodes.items() if node.group_name in DRAWN_GROUPS}
    assert sorted(required - set(diagram.groups)) == [], "assets missing from the diagram"
    misplaced = {
        name: (diagram.groups[name], nodes[name].group_name)
        for name in diagram.groups
        if diagram.groups[name] is not None and diagram.groups[name] != nodes[name].group_name
    }
    assert misplaced == {}, "diagram subgraph differs from the asset group"


def test_the_architecture_diagram_draws_exactly_the_real_dependencies(definitions):
    diagram = design_diagram()
    nodes = asset_nodes(definitions)
    drawn = set(diagram.groups) & set(nodes)
    real = {
        (parent.to_user_string(), name)
        for name in drawn
        for parent in nodes[name].parent_keys
        if parent.to_user_string() in drawn
    }
    assert sorted(real - diagram.edges) == [], "dependencies missing from the diagram"
    assert sorted(diagram.edges - real) == [], "edges in the diagram that are not dependencies"


def test_every_picture_the_ui_guide_shows_exists():
    guide = DESIGN.parent / "ui.md"
    pictures = re.findall(r"\]\((images/[^)]+)\)", guide.read_text())
    assert pictures, "docs/ui.md shows no pictures"
    assert [p for p in pictures if not (guide.parent / p).is_file()] == []
