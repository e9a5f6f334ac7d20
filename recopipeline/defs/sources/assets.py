"""The five source assets: contract files read, typed and written to the warehouse."""

import dagster as dg

from recopipeline.defs.resources import SourceResource, WarehouseResource
from recopipeline.defs.stage import KINDS, OWNERS, describe
from recopipeline.lib.contract import SOURCES, SourceContract
from recopipeline.lib.sources import SourceError, raw_scan, source_files, typed_select


def source_asset(contract: SourceContract) -> dg.AssetsDefinition:
    @dg.asset(
        name=contract.name,
        group_name="sources",
        description=f"{contract.description} Key: ({', '.join(contract.key)}). See docs/data_contract.md.",
        kinds=KINDS,
        owners=OWNERS,
        metadata={"contract": dg.MetadataValue.table_schema(_schema(contract))},
    )
    def _asset(warehouse: WarehouseResource, source: SourceResource) -> dg.MaterializeResult:
        store = warehouse.get()
        try:
            files = source_files(source.location(), contract)
        except SourceError as error:
            raise dg.Failure(description=str(error)) from None
        with store.session() as con:
            store.write(con, contract.name, typed_select(contract, raw_scan(files)), order_by=", ".join(contract.key))
            metadata = describe(con, store, contract.name, None)
        store.refresh_catalog()
        return dg.MaterializeResult(
            metadata={**metadata, "source_files": dg.MetadataValue.text("\n".join(map(str, files)))}
        )

    return _asset


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
