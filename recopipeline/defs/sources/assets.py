"""The five source assets: contract files read as they are, validated row by row, accepted or quarantined.

Each ingest splits the input rows in two: the rows that pass every rule of `lib/validation.py` become the
source's table, the others go to the quarantine with their reason, so `input = accepted + quarantined`
always holds (the step fails if it does not). The event sources depend on customers and products because an
event of an unknown customer or product is quarantined. The source's checks run in the same step.
"""

from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pandas as pd

from recopipeline.defs.partitions import first_hour, hourly_partitions, run_window, single_run_backfill
from recopipeline.defs.quality.quarantine import QUARANTINE, quarantine_part, quarantine_rows
from recopipeline.defs.quality.source_checks import IngestCounts, run_source_checks, source_check_specs
from recopipeline.defs.resources import SourceResource, TuningResource, WarehouseResource
from recopipeline.defs.sources.hours import create_run_input, owned_rows, write_accepted, write_quarantine
from recopipeline.defs.stage import KINDS, OWNERS, code_references, describe, publish_if_passed
from recopipeline.lib.contract import SOURCES, SourceContract
from recopipeline.lib.ingest import MALFORMED_LINES, RAW_INPUT, check_location, load_raw, raw_types
from recopipeline.lib.sources import SourceError, source_files
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.validation import REFERENCES, Ingest, accepted_sql, classify_sql, quarantine_sql
from recopipeline.lib.warehouse import MissingAssetError, Warehouse, is_remote, remove_leftovers, run

LIB = Path(__file__).parents[2] / "lib"

REJECTED = "rejected_rows"


def source_references(contract: SourceContract) -> list[str]:
    """The tables an ingest checks the source's keys against: customers and products, for the event sources."""
    return sorted(REFERENCES.values()) if contract.event_time is not None else []


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
            **code_references(__file__, LIB / "validation.py", LIB / "ingest.py"),
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
            counts, metadata = ingest_source_files(staged, contract, files, values, context.run.run_id, references, window)
            checked = run_source_checks(
                context, staged, contract, values, counts, quarantine_examples(store, contract),
                table_rows=metadata["dagster/row_count"].value if window else None,
            )
        except (SourceError, MissingAssetError) as error:
            staged.discard()
            raise dg.Failure(description=str(error)) from None
        except BaseException:
            staged.discard()
            raise
        metadata |= publish_if_passed(staged, checked, context.log)
        store.refresh_catalog()
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


def quarantine_examples(store: Warehouse, contract: SourceContract) -> pd.DataFrame:
    """A few of the source's quarantined rows, for the quarantine_share check (from its own files only: the
    other sources' ingests may be replacing theirs at the same time)."""
    columns = "reason, detail, raw_row, source_file, source_row"
    if is_remote(store.root):
        return store.read(f"SELECT {columns} FROM {store.scan(QUARANTINE)} WHERE source = $source "
                          "ORDER BY source_file, source_row LIMIT 5", params={"source": contract.name})
    own = [path for path in store.files(QUARANTINE)
           if Path(path).stem == contract.name or Path(path).stem.startswith(quarantine_part(contract.name, ""))]
    if not own:
        return pd.DataFrame(columns=columns.split(", "))
    paths = ", ".join("'" + path.replace("'", "''") + "'" for path in own)
    return store.read(
        f"SELECT {columns} FROM read_parquet([{paths}], union_by_name = true) ORDER BY source_file, source_row LIMIT 5"
    )


def ingest_source_files(
    store: Warehouse,
    contract: SourceContract,
    files: list,
    tuning: Tuning,
    run_id: str,
    references: list[str],
    window: tuple[datetime, datetime] | None,
) -> tuple[IngestCounts, dict]:
    """Read, classify and write one source; returns where the rows went and the table's metadata.

    With a window (the hours of an event source's run), only the input rows the run owns are classified and
    written, hour by hour (see hours.py); the input count is theirs.
    """
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    remove_leftovers(store.asset_dir(QUARANTINE))  # temporary files of killed ingests (the folder is shared)
    ingest = Ingest(now=now, future_tolerance_hours=tuning.future_tolerance_hours, references=frozenset(references))
    with store.session(references) as con:
        run(con, "SET TimeZone = 'UTC'")
        raw = load_raw(con, contract, files)
        if raw.input_rows == 0 and contract.event_time is None:
            raise SourceError(f"source '{contract.name}' has no rows; customers and products must not be empty")
        types = raw_types(con)
        relation, input_rows = RAW_INPUT, raw.input_rows
        if window is not None:
            relation = create_run_input(con, contract, RAW_INPUT, types, window, first_hour(), ingest.latest_allowed)
            input_rows = owned_rows(con) + raw.malformed_lines
        run(con, f"CREATE TEMP TABLE {REJECTED} AS {classify_sql(contract, ingest, types, relation)}")
        rejected = quarantine_sql(
            contract, relation, REJECTED, MALFORMED_LINES, run_id=run_id, ingested_at=now, partition_key=None
        )
        accepted_rows = accepted_sql(contract, types, relation, REJECTED)
        if window is None:
            quarantined = store.write(
                con, QUARANTINE, rejected, partition=quarantine_part(contract.name),
                order_by="source_file, source_row NULLS LAST, detail",
            )
            accepted = store.write(con, contract.name, accepted_rows, order_by=", ".join(contract.key))
        else:
            quarantined = write_quarantine(store, con, contract, rejected, window)
            accepted = write_accepted(store, con, contract, accepted_rows, window, first_hour())
        if accepted + quarantined != input_rows:
            raise RuntimeError(
                f"{contract.name}: {input_rows} input rows but {accepted} accepted + {quarantined} quarantined"
            )
        by_reason = dict(
            run(con, f"SELECT reason, count(*) FROM {REJECTED} GROUP BY reason")
            + ([("malformed_line", raw.malformed_lines)] if raw.malformed_lines else [])
        )
        metadata = describe(con, store, contract.name, None)
    counts = IngestCounts(input_rows, accepted, quarantined, {k: int(v) for k, v in by_reason.items()})
    metadata |= {
        "input_rows": dg.MetadataValue.int(counts.input_rows),
        "accepted_rows": dg.MetadataValue.int(counts.accepted_rows),
        "quarantined_rows": dg.MetadataValue.int(counts.quarantined_rows),
        "quarantined_by_reason": dg.MetadataValue.md(
            pd.DataFrame(sorted(counts.by_reason.items()), columns=["reason", "rows"]).to_markdown(index=False)
            if counts.by_reason
            else "_none_"
        ),
    }
    return counts, metadata


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
    )


customers = source_asset(SOURCES["customers"])
products = source_asset(SOURCES["products"])
orders = source_asset(SOURCES["orders"])
customer_interactions = source_asset(SOURCES["customer_interactions"])
cart_activity = source_asset(SOURCES["cart_activity"])
