"""The compiled loops (numba) of the blend and of the item pairs, and DuckDB's exact arithmetic they share.

- DuckDB's DECIMAL and rounding, exactly: a DOUBLE cast to DECIMAL(38, 12) rounds the scaled double half away
  from zero; DECIMAL sums are exact, so a loop sums integers of 1e-12; DECIMAL to DOUBLE and round(x, digits) are
  correctly rounded from the exact decimal value. The few values within a hair of a rounding boundary are decided
  in exact (Python) arithmetic.
- `blend_batch`: a batch of customers' candidates scored, blended, ranked and explained (lib/blend.py). For each
  customer the loop walks every strategy's candidates once (a seed's or bought product's neighbour list, the top
  products of the customer's categories, their orders, their segment's popular products, the trending list),
  accumulating each (product, strategy) in a dense slot table, so no candidate row is ever materialised or sorted.
- `item_pairs`: a batch of anchor products' item pairs (lib/collaborative.py).

The loops release the GIL, so worker threads run batches in parallel. They are compiled on first use and cached
next to this module (or in numba's user cache when the package directory is read-only). They live in one module
because numba's cache checks only the file that defines a compiled function: a change to a helper in another
file would leave the old machine code in use.
"""

from __future__ import annotations

import warnings
from fractions import Fraction

import numba
import numpy as np

UNITS = 10**12  # DECIMAL(38, 12): sums are exact in units of 1e-12
_TWO_53 = 1 << 53

# The exact fallbacks below take the GIL for the few values that need them; the loops still run in parallel.
warnings.filterwarnings("ignore", "Code running in object mode won't allow parallel execution", numba.NumbaWarning)


def _exact_double(units: int) -> float:
    return int(units) / UNITS  # Python's int / int is correctly rounded


def _exact_rounds_up(x: float, scale: int, rounded: float) -> bool:
    return Fraction(float(x)) * scale >= int(rounded) + Fraction(1, 2)


@numba.njit(cache=True, nogil=True)
def half_away(x: float) -> float:
    """C's round(): to the nearest integer, halves away from zero (DuckDB's round(DOUBLE) and DOUBLE to DECIMAL)."""
    magnitude = abs(x)
    rounded = np.floor(magnitude)
    if magnitude - rounded >= 0.5:
        rounded += 1.0
    return rounded if x >= 0 else -rounded


@numba.njit(cache=True, nogil=True)
def to_units(x: float) -> np.int64:
    """x::DECIMAL(38, 12) as an integer of 1e-12."""
    return np.int64(half_away(x * 1e12))


@numba.njit(cache=True, nogil=True)
def units_to_double(units: np.int64) -> float:
    """A DECIMAL(38, 12) given in integers of 1e-12 as DOUBLE: the double nearest to its exact value."""
    if abs(units) < _TWO_53:
        return units / 1e12  # both exact doubles: the division is correctly rounded
    # whole part (exact, |x| >= 2**13) plus the fraction rounded once: the sum rounds to the nearest double
    # unless it is within the fraction's error (2**-54) of a midpoint between doubles; those are divided exactly
    whole = units // UNITS
    fraction = (units - whole * UNITS) / 1e12
    total = float(whole) + fraction
    error = abs((float(whole) - total) + fraction)  # exact: Fast2Sum, |whole| >= fraction
    magnitude = abs(total)
    spacing = np.nextafter(magnitude, np.inf) - magnitude
    if min(abs(spacing / 2 - error), abs(spacing / 4 - error)) <= 2.0**-52:
        with numba.objmode(total="float64"):
            total = _exact_double(units)
    return total


@numba.njit(cache=True, nogil=True)
def round_to_units(x: float, scale: int) -> np.int64:
    """DuckDB's round(x, digits) for x >= 0 as an integer of 1/scale: the exact decimal value, halves up."""
    scaled = x * float(scale)
    rounded = np.floor(scaled)
    fraction = scaled - rounded
    up = fraction > 0.5
    if fraction == 0.5:  # the product was rounded onto a half: decide on the exact value
        with numba.objmode(up="boolean"):
            up = _exact_rounds_up(x, scale, rounded)
    return np.int64(rounded) + np.int64(up)


# ---- the blend ---------------------------------------------------------------------------------------------


OWNED, PURCHASED = 1, 2  # per product of the current customer: has an affinity row / bought it
_SCORE_LIMIT = (1 << 30) - 1  # a rounded score in units of 1e-9 is at most 1e9


@numba.njit(cache=True, nogil=True)
def blend_batch(
    low, high, products, capacity,
    variant, weights, total_weights, segment, known,
    seed_start, seed_product, seed_affinity,
    affinity_start, affinity_product, affinity_bought,
    ordered_start, ordered_product,
    category_start, category_number, category_score,
    repurchase_start, repurchase_product, repurchase_score, repurchase_orders,
    item_strategy, item_from_bought, item_indptr, item_indices, item_data,
    category_indptr, category_indices, category_data, category_best,
    popular_indptr, popular_indices, popular_data,
    trending_indices, trending_data,
    is_item, evidence_offset, collaborative, category_preference, repurchase, popular, trending,
    exclude_purchased, candidates, seeds_per_customer,
):
    """The output rows of customers low..high-1 (numbers), in (customer, rank) order.

    Per customer: the strategies' rows (available products only, without what the customer bought when purchases
    are excluded, and for collaborative without what they interacted with) are summed per (product, strategy),
    divided by the customer's best in the strategy and weighted by the customer's variant, blended per product,
    ranked by rounded score desc then product number, and cut to `candidates`. `capacity` bounds any customer's
    rows. Returns customer (relative to low), product, strategy, score, strategy bits, rank, variant, the
    evidence as offsets into source numbers (Catalogue.evidence_offset applied) and each strategy's normalised
    score of every row (strategies x rows: raw score / the customer's best in the strategy, what the blend
    weights; 0.0 where the strategy did not propose the product or its weight is 0 in the customer's variant).
    """
    strategies = weights.shape[1]
    exclude = PURCHASED if exclude_purchased else 0
    flags = np.zeros(products, dtype=np.uint8)
    slot = np.full(strategies * products, -1, dtype=np.int32)  # (strategy, product) -> group
    pair_slot = np.full(products, -1, dtype=np.int32)  # product -> pair
    best = np.empty(strategies, dtype=np.float64)

    member_source = np.empty(capacity, dtype=np.int32)  # a group's rows, linked in row order
    member_value = np.empty(capacity, dtype=np.float64)
    member_next = np.empty(capacity, dtype=np.int32)
    group_strategy = np.empty(capacity, dtype=np.int64)
    group_product = np.empty(capacity, dtype=np.int32)
    group_units = np.empty(capacity, dtype=np.int64)
    group_value = np.empty(capacity, dtype=np.float64)  # the first row's value (the raw score of a whole candidate)
    group_source = np.empty(capacity, dtype=np.int32)  # the first row's source
    group_head = np.empty(capacity, dtype=np.int32)
    group_tail = np.empty(capacity, dtype=np.int32)
    group_count = np.empty(capacity, dtype=np.int32)
    pair_product = np.empty(capacity, dtype=np.int32)
    pair_units = np.empty(capacity, dtype=np.int64)
    pair_strength = np.empty(capacity, dtype=np.int64)
    pair_group = np.empty(capacity, dtype=np.int32)
    pair_bits = np.empty(capacity, dtype=np.uint8)  # a bit per strategy: at most 8
    ranking = np.empty(capacity, dtype=np.int64)
    listed = np.empty(seeds_per_customer, dtype=np.int32)  # the evidence of one row, strongest first

    limit = (high - low) * candidates
    out_customer = np.empty(limit, dtype=np.int32)
    out_product = np.empty(limit, dtype=np.int32)
    out_strategy = np.empty(limit, dtype=np.int8)
    out_score = np.empty(limit, dtype=np.float64)
    out_bits = np.empty(limit, dtype=np.uint8)
    out_rank = np.empty(limit, dtype=np.int64)
    out_variant = np.empty(limit, dtype=np.int8)
    out_normalised = np.empty((strategies, limit), dtype=np.float64)  # by strategy: each column contiguous
    evidence_offsets = np.zeros(limit + 1, dtype=np.int64)
    evidence_values = np.empty(limit * max(seeds_per_customer, 1), dtype=np.int64)
    rows = 0

    for customer in range(low, high):
        weight = weights[variant[customer]]
        for i in range(affinity_start[customer], affinity_start[customer + 1]):
            flags[affinity_product[i]] = OWNED | (PURCHASED if affinity_bought[i] else 0)
        if exclude_purchased:
            for i in range(ordered_start[customer], ordered_start[customer + 1]):
                flags[ordered_product[i]] |= PURCHASED
        members = 0
        groups = 0

        # item-to-item: the customer's seeds (or, for EASE, bought products) times their neighbours
        for k in range(len(item_strategy)):
            strategy = item_strategy[k]
            if weight[strategy] <= 0:
                continue
            excluded = exclude | (OWNED if strategy == collaborative else 0)
            bought_only = item_from_bought[k]
            start = affinity_start[customer] if bought_only else seed_start[customer]
            end = affinity_start[customer + 1] if bought_only else seed_start[customer + 1]
            for i in range(start, end):
                if bought_only:
                    if not affinity_bought[i]:
                        continue
                    source = affinity_product[i]
                else:
                    source = seed_product[i]
                for position in range(item_indptr[k, source], item_indptr[k, source + 1]):
                    product = item_indices[position]
                    if flags[product] & excluded:
                        continue
                    value = item_data[position] if bought_only else seed_affinity[i] * item_data[position]
                    group = slot[strategy * products + product]
                    if group < 0:
                        group = groups
                        groups += 1
                        slot[strategy * products + product] = group
                        group_strategy[group] = strategy
                        group_product[group] = product
                        group_units[group] = 0
                        group_value[group] = value
                        group_source[group] = source
                        group_head[group] = members
                        group_count[group] = 0
                    else:
                        member_next[group_tail[group]] = members
                    group_units[group] += to_units(value)
                    member_source[members] = source
                    member_value[members] = value
                    member_next[members] = -1
                    group_tail[group] = members
                    group_count[group] += 1
                    members += 1

        # whole candidates: (strategy, product, raw score > 0, evidence source)
        for pass_number in range(4):
            if pass_number == 0:
                strategy = category_preference
                start, end = category_start[customer], category_start[customer + 1]
            elif pass_number == 1:
                strategy = repurchase
                start, end = repurchase_start[customer], repurchase_start[customer + 1]
            elif pass_number == 2:
                strategy = popular
                start, end = 0, (1 if segment[customer] >= 0 else 0)
            else:
                strategy = trending
                start, end = 0, (1 if known[customer] else 0)
            if weight[strategy] <= 0:
                continue
            for i in range(start, end):
                category = 0
                if pass_number == 0:
                    category = category_number[i]
                    first, last = category_indptr[category], category_indptr[category + 1]
                elif pass_number == 1:
                    first, last = i, i + 1
                elif pass_number == 2:
                    first, last = popular_indptr[segment[customer]], popular_indptr[segment[customer] + 1]
                else:
                    first, last = 0, len(trending_indices)
                for position in range(first, last):
                    if pass_number == 0:
                        product = category_indices[position]
                        raw = category_score[i] * category_data[position] / category_best[category]
                        source = category
                    elif pass_number == 1:
                        product = repurchase_product[position]
                        raw = repurchase_score[position]
                        source = repurchase_orders[position]
                    elif pass_number == 2:
                        product = popular_indices[position]
                        raw = popular_data[position]
                        source = segment[customer]
                    else:
                        product = trending_indices[position]
                        raw = trending_data[position]
                        source = 0
                    if not raw > 0 or flags[product] & exclude:
                        continue
                    if slot[strategy * products + product] >= 0:
                        continue  # the first row of a (product, strategy) counts
                    group = groups
                    groups += 1
                    slot[strategy * products + product] = group
                    group_strategy[group] = strategy
                    group_product[group] = product
                    group_value[group] = raw
                    group_source[group] = source
                    group_count[group] = 1

        # each strategy's scores divided by the customer's best in it, times the variant's weight, blended
        best[:] = -np.inf
        for group in range(groups):
            strategy = group_strategy[group]
            if is_item[strategy]:
                group_value[group] = units_to_double(group_units[group])  # the exact decimal sum
            if group_value[group] > 0 and group_value[group] > best[strategy]:
                best[strategy] = group_value[group]
        pairs = 0
        for group in range(groups):
            raw = group_value[group]
            if not raw > 0:
                continue
            strategy = group_strategy[group]
            product = group_product[group]
            contribution = weight[strategy] * raw / best[strategy]
            # strength: the contribution rounded to 1e-9, then the earlier strategy, as one integer
            strength = np.int64(half_away(contribution * 1e9)) * 16 + (14 - strategy)
            pair = pair_slot[product]
            if pair < 0:
                pair = pairs
                pairs += 1
                pair_slot[product] = pair
                pair_product[pair] = product
                pair_units[pair] = 0
                pair_strength[pair] = -1
                pair_bits[pair] = 0
            pair_units[pair] += to_units(contribution)
            if strength > pair_strength[pair]:
                pair_strength[pair] = strength
                pair_group[pair] = group
            pair_bits[pair] |= np.uint8(1 << strategy)

        # rank by rounded score desc, then product number; keep the first `candidates`
        total = total_weights[variant[customer]]
        for pair in range(pairs):
            score = round_to_units(units_to_double(pair_units[pair]) / total, 10**9)
            ranking[pair] = ((_SCORE_LIMIT - score) << 32) | pair_product[pair]
        ranked = np.sort(ranking[:pairs])
        for rank in range(min(pairs, candidates)):
            product = np.int32(ranked[rank] & 0xFFFFFFFF)
            pair = pair_slot[product]
            group = pair_group[pair]
            kind = group_strategy[group]
            out_customer[rows] = customer - low
            out_product[rows] = product
            out_strategy[rows] = kind
            out_score[rows] = (_SCORE_LIMIT - (ranked[rank] >> 32)) / 1e9
            out_bits[rows] = pair_bits[pair]
            out_rank[rows] = rank + 1
            out_variant[rows] = variant[customer]
            for s in range(strategies):
                # the slot table still maps (strategy, product) to its group; an item strategy's value is its exact
                # decimal sum (set before `best`); strategies without weight formed no group
                candidate = slot[s * products + product]
                if candidate >= 0 and group_value[candidate] > 0:
                    out_normalised[s, rows] = group_value[candidate] / best[s]
                else:
                    out_normalised[s, rows] = 0.0
            at = evidence_offsets[rows]
            if is_item[kind]:
                # the group's `seeds_per_customer` strongest sources by contribution desc; ties keep the row order
                # (product order): a source enters only if it beats the last one listed
                count = 0
                member = group_head[group]
                for _ in range(group_count[group]):
                    value = member_value[member]
                    if count < seeds_per_customer or member_value[listed[count - 1]] < value:
                        j = min(count, seeds_per_customer - 1)  # when the list is full, its last one drops out
                        while j > 0 and member_value[listed[j - 1]] < value:
                            listed[j] = listed[j - 1]
                            j -= 1
                        listed[j] = member
                        count = min(count + 1, seeds_per_customer)
                    member = member_next[member]
                for j in range(count):
                    evidence_values[at + j] = member_source[listed[j]] + evidence_offset[kind]
            else:
                count = 1
                evidence_values[at] = group_source[group] + evidence_offset[kind]
            evidence_offsets[rows + 1] = at + count
            rows += 1

        # clear the customer's marks
        for i in range(affinity_start[customer], affinity_start[customer + 1]):
            flags[affinity_product[i]] = 0
        if exclude_purchased:
            for i in range(ordered_start[customer], ordered_start[customer + 1]):
                flags[ordered_product[i]] = 0
        for group in range(groups):
            slot[group_strategy[group] * products + group_product[group]] = -1
        for pair in range(pairs):
            pair_slot[pair_product[pair]] = -1

    return (out_customer[:rows], out_product[:rows], out_strategy[:rows], out_score[:rows], out_bits[:rows],
            out_rank[:rows], out_variant[:rows], evidence_offsets[: rows + 1],
            evidence_values[: evidence_offsets[rows]], out_normalised[:, :rows])


# ---- the item pairs ---------------------------------------------------------------------------------------


_CARRY = 1 << 62  # an accumulator is high x 2**62 + low, 0 <= low < 2**62: exact for any number of terms


def _exact_sum(high: int, low: int) -> float:
    return (int(high) * _CARRY + int(low)) / UNITS  # Python's int / int is correctly rounded


@numba.njit(cache=True, nogil=True)
def _dot(high: np.int64, low: np.int64) -> float:
    if high == 0:
        return units_to_double(low)
    with numba.objmode(total="float64"):
        total = _exact_sum(high, low)
    return total


@numba.njit(cache=True, nogil=True)
def item_pairs(
    low, high, product_start, by_product, customer_of_row, customer_start, product, affinity, norms,
    min_common, top_k,
):
    """The kept pairs of anchor products low..high-1: anchor, other product, common customers, similarity and
    rank, in (anchor, rank) order, products as numbers."""
    products = len(norms)
    accumulated_low = np.zeros(products, dtype=np.int64)
    accumulated_high = np.zeros(products, dtype=np.int64)
    common = np.zeros(products, dtype=np.int64)
    touched = np.empty(products, dtype=np.int32)
    best_product = np.empty(top_k, dtype=np.int32)
    best_common = np.empty(top_k, dtype=np.int64)
    best_score = np.empty(top_k, dtype=np.int64)
    limit = (high - low) * top_k
    out_first = np.empty(limit, dtype=np.int32)
    out_second = np.empty(limit, dtype=np.int32)
    out_common = np.empty(limit, dtype=np.int64)
    out_similarity = np.empty(limit, dtype=np.float64)
    out_rank = np.empty(limit, dtype=np.int64)
    rows = 0
    for anchor in range(low, high):
        others = 0
        for j in range(product_start[anchor], product_start[anchor + 1]):
            row = by_product[j]
            weight = affinity[row]
            holder = customer_of_row[row]
            for k in range(customer_start[holder], customer_start[holder + 1]):
                other = product[k]
                if other == anchor:
                    continue
                if common[other] == 0:
                    touched[others] = other
                    others += 1
                common[other] += 1
                term = to_units(weight * affinity[k])  # >= 0: affinities are ln(1 + a positive score)
                accumulated_high[other] += term >> 62
                accumulated_low[other] += term & (_CARRY - 1)
                if accumulated_low[other] >= _CARRY:
                    accumulated_low[other] -= _CARRY
                    accumulated_high[other] += 1
        kept = 0
        for t in range(others):
            other = touched[t]
            shared = common[other]
            if shared >= min_common:
                dot = _dot(accumulated_high[other], accumulated_low[other])
                score = round_to_units(dot / (norms[anchor] * norms[other]), 10**9)
                # insert into the best `top_k`: score desc, common customers desc, product number
                position = kept
                while position > 0 and (
                    best_score[position - 1] < score
                    or (best_score[position - 1] == score and (
                        best_common[position - 1] < shared
                        or (best_common[position - 1] == shared and best_product[position - 1] > other)))
                ):
                    if position < top_k:
                        best_score[position] = best_score[position - 1]
                        best_common[position] = best_common[position - 1]
                        best_product[position] = best_product[position - 1]
                    position -= 1
                if position < top_k:
                    best_score[position] = score
                    best_common[position] = shared
                    best_product[position] = other
                    if kept < top_k:
                        kept += 1
            accumulated_low[other] = 0
            accumulated_high[other] = 0
            common[other] = 0
        for r in range(kept):
            out_first[rows] = anchor
            out_second[rows] = best_product[r]
            out_common[rows] = best_common[r]
            out_similarity[rows] = best_score[r] / 1e9
            out_rank[rows] = r + 1
            rows += 1
    return out_first[:rows], out_second[:rows], out_common[:rows], out_similarity[:rows], out_rank[:rows]
