"""The blend's per-customer loop, compiled: a batch of customers' candidates scored, blended, ranked, explained.

For each customer the kernel walks every strategy's candidates once (a seed's or bought product's neighbour list,
the top products of the customer's categories, their orders, their segment's popular products), accumulating each
(product, strategy) in a dense slot table, so no candidate row is ever materialised or sorted. The SQL's decimal
arithmetic is reproduced exactly: contributions are summed as integers of 1e-12, each rounded half away from zero
first (DOUBLE to DECIMAL(38, 12)); DECIMAL to DOUBLE and round(x, 9) are correctly rounded from the exact decimal
value.

The arithmetic is `lib/exact.py`'s. The kernel releases the GIL, so the blend's worker threads run batches in
parallel. It is compiled on first use and cached next to this module (or in numba's user cache when the package
directory is read-only).
"""

from __future__ import annotations

import numba
import numpy as np

from recopipeline.lib.exact import half_away, round_to_units, to_units, units_to_double

OWNED, PURCHASED = 1, 2  # per product of the current customer: has an affinity row / bought it
_SCORE_LIMIT = (1 << 30) - 1  # a rounded score in units of 1e-9 is at most 1e9


@numba.njit(cache=True, nogil=True)
def blend_batch(
    low, high, products, capacity,
    variant, weights, total_weights, segment,
    seed_start, seed_product, seed_affinity,
    affinity_start, affinity_product, affinity_bought,
    ordered_start, ordered_product,
    category_start, category_number, category_score,
    repurchase_start, repurchase_product, repurchase_score, repurchase_orders,
    item_strategy, item_from_bought, item_indptr, item_indices, item_data,
    category_indptr, category_indices, category_data, category_best,
    popular_indptr, popular_indices, popular_data,
    is_item, evidence_offset, collaborative, category_preference, repurchase, popular,
    exclude_purchased, candidates, seeds_per_customer,
):
    """The output rows of customers low..high-1 (numbers), in (customer, rank) order.

    Per customer: the strategies' rows (available products only, without what the customer bought when purchases
    are excluded, and for collaborative without what they interacted with) are summed per (product, strategy),
    divided by the customer's best in the strategy and weighted by the customer's variant, blended per product,
    ranked by rounded score desc then product number, and cut to `candidates`. `capacity` bounds any customer's
    rows. Returns customer (relative to low), product, strategy, score, strategy bits, rank, variant and the
    evidence as offsets into source numbers (Catalogue.evidence_offset applied).
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
    pair_bits = np.empty(capacity, dtype=np.int8)
    ranking = np.empty(capacity, dtype=np.int64)
    listed = np.empty(capacity, dtype=np.int32)

    limit = (high - low) * candidates
    out_customer = np.empty(limit, dtype=np.int32)
    out_product = np.empty(limit, dtype=np.int32)
    out_strategy = np.empty(limit, dtype=np.int8)
    out_score = np.empty(limit, dtype=np.float64)
    out_bits = np.empty(limit, dtype=np.int8)
    out_rank = np.empty(limit, dtype=np.int64)
    out_variant = np.empty(limit, dtype=np.int8)
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
        for pass_number in range(3):
            if pass_number == 0:
                strategy = category_preference
                start, end = category_start[customer], category_start[customer + 1]
            elif pass_number == 1:
                strategy = repurchase
                start, end = repurchase_start[customer], repurchase_start[customer + 1]
            else:
                strategy = popular
                start, end = 0, (1 if segment[customer] >= 0 else 0)
            if weight[strategy] <= 0:
                continue
            for i in range(start, end):
                category = 0
                if pass_number == 0:
                    category = category_number[i]
                    first, last = category_indptr[category], category_indptr[category + 1]
                elif pass_number == 1:
                    first, last = i, i + 1
                else:
                    first, last = popular_indptr[segment[customer]], popular_indptr[segment[customer] + 1]
                for position in range(first, last):
                    if pass_number == 0:
                        product = category_indices[position]
                        raw = category_score[i] * category_data[position] / category_best[category]
                        source = category
                    elif pass_number == 1:
                        product = repurchase_product[position]
                        raw = repurchase_score[position]
                        source = repurchase_orders[position]
                    else:
                        product = popular_indices[position]
                        raw = popular_data[position]
                        source = segment[customer]
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
            pair_bits[pair] |= np.int8(1 << strategy)

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
            at = evidence_offsets[rows]
            if is_item[kind]:
                # the group's sources by contribution desc; ties keep the row order (product order)
                count = 0
                member = group_head[group]
                while count < group_count[group]:
                    value = member_value[member]
                    j = count
                    while j > 0 and member_value[listed[j - 1]] < value:
                        listed[j] = listed[j - 1]
                        j -= 1
                    listed[j] = member
                    count += 1
                    member = member_next[member]
                count = min(count, seeds_per_customer)
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
            evidence_values[: evidence_offsets[rows]])
