"""A/B variants: which blend configuration each customer gets, the same in Python and in DuckDB SQL.

A variant is a name, a share of customers and overrides of the blend weights (`weight_<strategy>` tuning values).
A customer's variant follows from the first 32 bits of md5(salt || ':' || customer_id): the 2^32 hash values are
cut into consecutive ranges, one per variant in the order given, sized by the shares. The assignment is stable
for a customer while the salt and the shares stay the same; a new salt reshuffles everyone (a new experiment).

The specification is JSON, name -> {"share": s, "weight_<strategy>": w, ...}, e.g.
`{"control": {"share": 0.5}, "more_popular": {"share": 0.5, "weight_popular": 0.4}}`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

HASH_SPACE = 2**32
DEFAULT_VARIANTS = '{"control": {"share": 1.0}}'
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


@dataclass(frozen=True)
class Variant:
    name: str
    share: float
    weights: dict[str, float] = field(default_factory=dict)  # overrides of weight_<strategy> tuning values


@dataclass(frozen=True)
class Experiment:
    salt: str
    variants: tuple[Variant, ...]

    @classmethod
    def parse(cls, spec: str, salt: str, weight_names: tuple[str, ...] = ()) -> "Experiment":
        """Read and check a JSON specification; `weight_names` are the allowed override keys."""
        try:
            raw = json.loads(spec)
        except json.JSONDecodeError as error:
            raise ValueError(f"ab_variants is not valid JSON: {error.msg}") from None
        if not isinstance(raw, dict) or not raw:
            raise ValueError('ab_variants must be a JSON object such as {"control": {"share": 1.0}}')
        variants = []
        for name, settings in raw.items():
            if not _NAME.match(name):
                raise ValueError(f"variant name {name!r} must be lower-case letters, digits and _ (max 40)")
            if not isinstance(settings, dict) or "share" not in settings:
                raise ValueError(f"variant {name!r} needs a share")
            overrides = {key: value for key, value in settings.items() if key != "share"}
            unknown = sorted(set(overrides) - set(weight_names)) if weight_names else []
            if unknown:
                raise ValueError(f"variant {name!r} overrides unknown blend weights: {', '.join(unknown)}")
            for key, value in [("share", settings["share"]), *overrides.items()]:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"variant {name!r}: {key} must be a number >= 0")
            if settings["share"] <= 0:
                raise ValueError(f"variant {name!r}: share must be > 0")
            variants.append(Variant(name, float(settings["share"]), {k: float(v) for k, v in overrides.items()}))
        total = sum(v.share for v in variants)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"variant shares must add up to 1 (they add up to {total:g})")
        if not salt:
            raise ValueError("ab_salt must not be empty")
        return cls(salt=salt, variants=tuple(variants))

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.variants]

    def buckets(self) -> list[tuple[str, int, int]]:
        """(variant, lower, upper): the variant owns hash values lower <= h < upper; the last upper is 2^32."""
        rows, lower, cumulative = [], 0, 0.0
        for index, variant in enumerate(self.variants):
            cumulative += variant.share
            upper = HASH_SPACE if index == len(self.variants) - 1 else round(cumulative * HASH_SPACE)
            rows.append((variant.name, lower, upper))
            lower = upper
        return rows

    def assign(self, customer_id: str) -> str:
        """The variant of one customer."""
        value = customer_hash(self.salt, customer_id)
        return next(name for name, lower, upper in self.buckets() if lower <= value < upper)

    def to_json(self) -> str:
        """The salt and the variants, as stored with each publication."""
        variants = {v.name: {"share": v.share, **v.weights} for v in self.variants}
        return json.dumps({"salt": self.salt, "variants": variants})

    @classmethod
    def from_json(cls, text: str) -> "Experiment":
        record = json.loads(text)
        return cls.parse(json.dumps(record["variants"]), record["salt"])


def customer_hash(salt: str, customer_id: str) -> int:
    """The first 32 bits of md5(salt || ':' || customer_id)."""
    return int(hashlib.md5(f"{salt}:{customer_id}".encode("utf-8")).hexdigest()[:8], 16)

