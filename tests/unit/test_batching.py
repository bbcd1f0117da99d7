"""Data order is a pure function of (seed, epoch); collation shifts targets per example."""

import random

import pytest

from qwen_sft.batching import Collator, StepPlan, collate_padded, collate_padding_free, epoch_batches, pack_rows
from qwen_sft.data.encode import Encoded

A = Encoded(input_ids=[10, 11, 12, 13], labels=[-100, -100, 12, 13])
B = Encoded(input_ids=[20, 21, 22], labels=[-100, 21, 22])


def test_padding_free_concatenates_with_restarting_positions_and_per_example_shift():
    b = collate_padding_free([A, B])
    assert b["input_ids"].tolist() == [[10, 11, 12, 13, 20, 21, 22]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2]]
    # target[t] = label of token t+1 of the same example; never across the boundary (13 -> 20).
    assert b["targets"].tolist() == [[-100, 12, 13, -100, 21, 22, -100]]


def test_padded_layout():
    b = collate_padded([A, B], pad_id=0)
    assert b["input_ids"].tolist() == [[10, 11, 12, 13], [20, 21, 22, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert b["targets"].tolist() == [[-100, 12, 13, -100], [21, 22, -100, -100]]


def test_epoch_batches_cover_every_row_once_and_reshuffle_each_epoch():
    lengths = [(i * 37) % 101 + 1 for i in range(250)]
    for group in (False, True):
        e0 = epoch_batches(lengths, 4, seed=1, epoch=0, group_by_length=group)
        e1 = epoch_batches(lengths, 4, seed=1, epoch=1, group_by_length=group)
        assert sorted(i for b in e0 for i in b) == list(range(250))
        assert e0 != e1
        assert e0 == epoch_batches(lengths, 4, seed=1, epoch=0, group_by_length=group)


def test_group_by_length_groups_similar_lengths():
    lengths = [(i * 37) % 101 + 1 for i in range(400)]
    spread = lambda batches: sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)  # noqa: E731
    grouped = epoch_batches(lengths, 4, 0, 0, True)
    plain = epoch_batches(lengths, 4, 0, 0, False)
    assert spread(grouped) < spread(plain) / 5


def test_step_plan_maps_steps_to_micro_batches():
    plan = StepPlan([5] * 10, batch_size=2, accumulation=2, seed=0, group_by_length=False, num_epochs=2)
    assert (plan.micro_per_epoch, plan.steps_per_epoch, plan.total_steps) == (5, 3, 6)
    epoch0 = [b for s in range(3) for b in plan.step_batches(s)]
    assert epoch0 == epoch_batches([5] * 10, 2, 0, 0, False)
    assert len(plan.step_batches(2)) == 1  # the epoch's last step holds the remainder
    assert StepPlan([5] * 10, 2, 2, 0, False, 2, max_steps=4).total_steps == 4
    # Several steps in one call: the same micro-batches, back to back, and each step's count (a resume mid-epoch).
    for first, last in [(0, 3), (1, 3), (3, 6), (4, 5)]:
        flat, sizes = plan.steps_batches(first, last)
        assert flat == [b for s in range(first, last) for b in plan.step_batches(s)]
        assert sizes == [len(plan.step_batches(s)) for s in range(first, last)]


def test_pack_rows_fills_budget_and_keeps_every_row_once():
    lengths = [(i * 53) % 97 + 3 for i in range(120)]
    packs = pack_rows(lengths, budget=128)
    assert sorted(i for p in packs for i in p) == list(range(120))
    assert all(sum(lengths[i] for i in p) <= 128 for p in packs)
    assert len(packs) < 120 / 2  # short rows share packs
    assert pack_rows(lengths, 128) == packs  # deterministic: the step plan is the same every epoch
    assert pack_rows([200, 5], budget=128) == [[0], [1]]  # a row longer than the budget stays alone


def _first_fit_by_scanning(lengths, budget):
    packs, room = [], []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        slot = next((k for k, r in enumerate(room) if r >= lengths[i]), None)
        if slot is None:
            packs.append([i])
            room.append(budget - lengths[i])
        else:
            packs[slot].append(i)
            room[slot] -= lengths[i]
    return packs


@pytest.mark.parametrize("seed", range(20))
def test_pack_rows_is_first_fit_decreasing(seed):
    """The tree search picks exactly the pack a scan over all packs would."""
    rng = random.Random(seed)
    n, budget = rng.randint(0, 300), rng.choice([16, 64, 100, 4096])
    lengths = [rng.randint(1, budget + 5) for _ in range(n)]
    assert pack_rows(lengths, budget) == _first_fit_by_scanning(lengths, budget)


def test_packed_collation_is_padding_free_over_the_pack_rows():
    c = Collator([A, B, A], padding_free=True, pad_id=0, packs=[[0, 1], [2]])
    packed = c([0])
    plain = collate_padding_free([A, B])
    assert packed["input_ids"].tolist() == plain["input_ids"].tolist()
    assert packed["position_ids"].tolist() == plain["position_ids"].tolist()
    assert packed["targets"].tolist() == plain["targets"].tolist()
