"""The EASE item-item model (numpy), a product table like the collaborative similarity; see lib/ease.py."""

import time

import dagster as dg

from recopipeline.defs.quality.derived_checks import derived_check_specs, run_derived_checks
from recopipeline.defs.resources import TuningResource, WarehouseResource
from recopipeline.defs.stage import KINDS, OWNERS, code_references, describe, publish_if_passed, resolve_as_of
from recopipeline.lib import ease as ease_module
from recopipeline.lib.ease import ASSET, INPUTS, write_ease_item_similarity


@dg.asset(
    name=ASSET,
    group_name="similarity",
    deps=list(INPUTS),
    pool=ASSET,
    kinds=KINDS | {"numpy"},
    owners=OWNERS,
    metadata=code_references(ease_module.__file__, __file__),
    description=(
        "EASE (Steck 2019) item-item weights from purchases, fitted in closed form over the most-bought "
        "products (ease_max_items); the top ease_top_k positive weights per product. Feeds the 'ease' strategy."
    ),
    check_specs=derived_check_specs(ASSET),  # the table's invariants, see defs/quality/derived_checks.py
)
def ease_item_similarity(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, tuning: TuningResource
) -> dg.MaterializeResult:
    store = warehouse.get()
    values = tuning.get()
    as_of = resolve_as_of(context, store)
    started = time.perf_counter()
    staged = store.stage(ASSET)  # written, audited, then published (see lib/warehouse.py)
    try:
        write_ease_item_similarity(staged, values, as_of)
        seconds = time.perf_counter() - started
        with staged.session() as con:
            metadata = describe(con, staged, ASSET, "ease_weight")
            (products,) = con.sql(f"SELECT count(DISTINCT product_id_1) FROM {staged.scan(ASSET)}").fetchall()[0]
        checked = run_derived_checks(context, staged, values, ASSET, as_of)
    except BaseException:
        staged.discard()
        raise
    metadata |= publish_if_passed(staged, checked, context.log)
    store.refresh_catalog()
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "products_in_model": dg.MetadataValue.int(int(products)),
            "fit_seconds": dg.MetadataValue.float(round(seconds, 3)),
            "as_of": dg.MetadataValue.text(as_of.isoformat()),
        },
        check_results=checked,
    )
