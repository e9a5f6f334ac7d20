"""The source assets: contract files read as they are, validated row by row, accepted or quarantined.

The ingest itself is `lib/source_ingest.py`; the step fails unless `input = accepted + quarantined`. The event
sources depend on customers and products because an event of an unknown customer or product is quarantined.
The source's checks run in the same step.
"""

from pathlib import Path

import dagster as dg
import pandas as pd

from recopipeline.defs.partitions import first_hour, hourly_partitions, run_window, single_run_backfill
from recopipeline.defs.quality.source_checks import run_source_checks, source_check_specs
from recopipeline.defs.resources import SourceResource, TuningResource, WarehouseResource
from recopipeline.defs.stage import KINDS, OWNERS, code_references, describe, publish_if_passed
from recopipeline.lib.contract import SOURCES, SourceContract
from recopipeline.lib.hourly import covered_since
from recopipeline.lib.ingest import check_location
from recopipeline.lib.keys import BY_SOURCE, KEY_TYPE, key_columns
from recopipeline.lib.quarantine import QUARANTINE, quarantine_examples, quarantine_part, quarantine_rows
from recopipeline.lib.source_ingest import IngestCounts, ingest_source_files, source_references
from recopipeline.lib.sources import SourceError, source_files
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import MissingAssetError, Warehouse

LIB = Path(__file__).parents[2] / "lib"


def source_asset(contract: SourceContract) -> dg.AssetsDefinition:
    references = source_references(contract)
    hourly = contract.event_time is not None  # event sources are partitioned by hour, see docs/refresh.md

    @dg.asset(
        name=contract.name,
        group_name="sources",
        deps=references,
        partitions_def=hourly_partitions if hourly else None,
        backfill_policy=single_run_backfill if hourly else None,
        pool=contract.name,  # one writer of this source at a time across runs (dagster.yaml)
        description=(
            f"{contract.description} Key: ({', '.join(contract.key)}). Rows that break the contract go to "
            "the quarantine. See docs/data_contract.md and docs/data_quality.md."
        ),
        kinds=KINDS,
        owners=OWNERS,
        metadata={
            "contract": dg.MetadataValue.table_schema(_schema(contract)),
            **code_references(__file__, LIB / "source_ingest.py", LIB / "validation.py", LIB / "ingest.py"),
        },
        check_specs=source_check_specs(contract),
    )
    def _asset(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        source: SourceResource,
        tuning: TuningResource,
    ) -> dg.MaterializeResult:
        store = warehouse.get()
        values: Tuning = tuning.get()
        window = run_window(context) if hourly else None  # the hours this run replaces
        staged = store.stage(contract.name)  # written, audited, then published (see lib/warehouse.py)
        try:
            location = source.location()
            check_location(location)
            files = source_files(location, contract)
            counts = ingest_source_files(staged, contract, files, values, context.run.run_id, window, first_hour())
            metadata = ingest_metadata(staged, contract, counts)
            checked = run_source_checks(
                context, staged, contract, values, counts, quarantine_examples(store, contract.name),
                table_rows=metadata["dagster/row_count"].value if window else None,
                written_since=covered_since(window[0], first_hour()) if window else None,
            )
        except (SourceError, MissingAssetError) as error:
            staged.discard()
            raise dg.Failure(description=str(error)) from None
        except BaseException:
            staged.discard()
            raise
        metadata |= publish_if_passed(staged, checked, context.log)
        store.refresh_catalog([contract.name])
        quarantine_file = (
            store.partition_path(QUARANTINE, quarantine_part(contract.name)) if window is None
            else store.asset_dir(QUARANTINE)
        )
        context.log_event(
            dg.AssetMaterialization(
                QUARANTINE,
                description=f"{counts.quarantined_rows:,} row(s) quarantined from {contract.name}",
                metadata={
                    "dagster/row_count": quarantine_rows(store),
                    "source": contract.name,
                    "quarantined_rows": counts.quarantined_rows,
                    "by_reason": dg.MetadataValue.json(counts.by_reason),
                    "path": dg.MetadataValue.path(quarantine_file),
                },
            )
        )
        return dg.MaterializeResult(
            metadata={**metadata, "source_files": dg.MetadataValue.text("\n".join(map(str, files)))},
            check_results=checked,
        )

    return _asset


def ingest_metadata(staged: Warehouse, contract: SourceContract, counts: IngestCounts) -> dict:
    """The table's metadata and where its input rows went."""
    with staged.session() as con:
        metadata = describe(con, staged, contract.name, None)
    return metadata | {
        "input_rows": dg.MetadataValue.int(counts.input_rows),
        "accepted_rows": dg.MetadataValue.int(counts.accepted_rows),
        "quarantined_rows": dg.MetadataValue.int(counts.quarantined_rows),
        "quarantined_by_reason": dg.MetadataValue.md(
            pd.DataFrame(sorted(counts.by_reason.items()), columns=["reason", "rows"]).to_markdown(index=False)
            if counts.by_reason
            else "_none_"
        ),
    }


def _schema(contract: SourceContract) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
                type=c.type,
                description=c.description,
                constraints=dg.TableColumnConstraints(nullable=c.nullable, unique=contract.key == (c.name,)),
            )
            for c in contract.columns
        ]
        + [
            dg.TableColumn(
                name=key, type=KEY_TYPE, description="Integer surrogate key (lib/keys.py).",
                constraints=dg.TableColumnConstraints(nullable=False, unique=contract.name in BY_SOURCE),
            )
            for key in key_columns(contract)
        ]
    )


customers = source_asset(SOURCES["customers"])
products = source_asset(SOURCES["products"])
orders = source_asset(SOURCES["orders"])
customer_interactions = source_asset(SOURCES["customer_interactions"])
cart_activity = source_asset(SOURCES["cart_activity"])
merchandising_rules = source_asset(SOURCES["merchandising_rules"])
