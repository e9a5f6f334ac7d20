"""Finding the source files and reading them as the data contract says.

A source location is a directory holding, per source, `<source>.parquet`, `<source>.csv` or a folder
`<source>/` of such files. Synthetic and Online Retail sources are first written to such a directory under
the local home (cached by scale and seed).
"""

from __future__ import annotations

from pathlib import Path

from recopipeline.lib.contract import SourceContract

SYNTHETIC_PREFIX = "synthetic:"
ONLINE_RETAIL_PREFIX = "online_retail:"


class SourceError(RuntimeError):
    """The source location or one of its files cannot be used."""


def resolve_location(spec: str, cache_dir: Path, seed: int = 42) -> Path:
    """Turn a RECOPIPELINE_SOURCE value into a directory of contract files, generating them when needed."""
    if spec.startswith(SYNTHETIC_PREFIX):
        from recopipeline.lib.generator import SCALES, generate

        scale = spec.removeprefix(SYNTHETIC_PREFIX)
        if scale not in SCALES:
            raise SourceError(f"unknown synthetic scale {scale!r}; choose one of {', '.join(SCALES)}")
        target = cache_dir / f"synthetic-{scale}-seed{seed}"
        if not (target / "_SUCCESS").exists():
            generate(scale, target, seed=seed)
            (target / "_SUCCESS").touch()
        return target
    if spec.startswith(ONLINE_RETAIL_PREFIX):
        from recopipeline.lib.online_retail import SAMPLE_PATH, convert_online_retail

        name = spec.removeprefix(ONLINE_RETAIL_PREFIX)
        raw = SAMPLE_PATH if name == "sample" else Path(name)
        if not raw.exists():
            raise SourceError(f"Online Retail file not found: {raw}")
        target = cache_dir / f"online_retail-{raw.stem}"
        if not (target / "_SUCCESS").exists():
            convert_online_retail(raw, target)
            (target / "_SUCCESS").touch()
        return target
    location = Path(spec)
    if not location.is_dir():
        raise SourceError(f"source directory not found: {location}")
    return location


def source_files(location: Path, contract: SourceContract) -> list[Path]:
    """The files that hold one source, in a stable order; none for an optional source the location lacks."""
    folder = location / contract.name
    candidates = [location / f"{contract.name}.parquet", location / f"{contract.name}.csv"]
    if folder.is_dir():
        candidates += sorted(folder.glob("*.parquet")) + sorted(folder.glob("*.csv"))
    files = [path for path in candidates if path.is_file()]
    if not files and contract.optional:
        return []
    if not files:
        raise SourceError(
            f"no file for source '{contract.name}' in {location} "
            f"(expected {contract.name}.parquet, {contract.name}.csv or a folder {contract.name}/)"
        )
    kinds = {path.suffix for path in files}
    if len(kinds) > 1:
        raise SourceError(f"source '{contract.name}' mixes CSV and Parquet files in {location}")
    return files
