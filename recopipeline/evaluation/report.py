"""The evaluation result as Markdown: one table per variant, with each method's NDCG@20 over the reference."""

from __future__ import annotations

from recopipeline.evaluation.split import DISCOVERY, REPEAT, VARIANTS

# The baseline each variant's target is measured against.
REFERENCE = {DISCOVERY: "global_popularity", REPEAT: "buy_it_again"}
COLUMNS = [
    ("precision@10", "P@10"), ("recall@10", "R@10"), ("ndcg@10", "NDCG@10"), ("hit_rate@10", "HR@10"),
    ("precision@20", "P@20"), ("recall@20", "R@20"), ("ndcg@20", "NDCG@20"), ("map@20", "MAP@20"),
    ("hit_rate@20", "HR@20"), ("coverage@20", "Cov@20"), ("served", "served"),
]


def lift(result: dict, variant: str, method: str) -> float | None:
    """NDCG@20 of a method divided by the variant's reference baseline's."""
    by_method = {r["method"]: r for r in result["rows"] if r["variant"] == variant}
    reference = by_method.get(REFERENCE[variant], {}).get("ndcg@20")
    value = by_method.get(method, {}).get("ndcg@20")
    return value / reference if reference and value is not None else None


def markdown_report(result: dict) -> str:
    lines = [
        f"Data: `{result['data'].rsplit('/', 1)[-1]}`, cut {result['cut'][:10]}, catalogue "
        f"{result['catalogue_size']:,} products; test customers: "
        + ", ".join(f"{v} {n:,}" for v, n in result["test_customers"].items()),
    ]
    for variant in VARIANTS:
        lines += [
            "",
            f"**{variant}** (× = NDCG@20 over {REFERENCE[variant].replace('_', ' ')})",
            "",
            "| method | group | " + " | ".join(label for _, label in COLUMNS) + " | × |",
            "| --- | --- | " + " | ".join("---:" for _ in COLUMNS) + " | ---: |",
        ]
        for row in (r for r in result["rows"] if r["variant"] == variant):
            ratio = lift(result, variant, row["method"])
            cells = " | ".join(f"{row[key]:.4f}" if key != "served" else f"{row[key]:.3f}" for key, _ in COLUMNS)
            name = f"**{row['method']}**" if row["group"] == "pipeline" else row["method"]
            lines.append(f"| {name} | {row['group']} | {cells} | {ratio:.2f} |" if ratio is not None
                         else f"| {name} | {row['group']} | {cells} | |")
    return "\n".join(lines)
