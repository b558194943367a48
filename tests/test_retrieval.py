"""Retrieval metrics (precision@1, R-precision, MAP@R) against a brute-force loop over queries
and against values computed by hand, with ties and a class of one sample."""
import math

import pytest
import torch

from losses.retrieval import nearest_others, ranked, retrieval_metrics


def loop_metrics(features, labels):
    """Each query: the others sorted by (distance, index); queries whose class has no other
    sample left out."""
    p1, rp, mapr = [], [], []
    for q in range(len(features)):
        others = sorted((math.dist(features[q], features[j]), j)
                        for j in range(len(features)) if j != q)
        rel = [labels[j] == labels[q] for _, j in others]
        r = sum(rel)
        if r == 0:
            continue
        p1.append(float(rel[0]))
        rp.append(sum(rel[:r]) / r)
        mapr.append(sum(sum(rel[:i + 1]) / (i + 1) for i in range(r) if rel[i]) / r)
    return {"precision_at_1": sum(p1) / len(p1), "r_precision": sum(rp) / len(rp),
            "map_at_r": sum(mapr) / len(mapr)}


# Six points on a line (as 2-D features). Classes A = {0, 1, 4} (R = 2), B = {2, 3} (R = 1),
# C = {5}: a class of one sample, R = 0, left out. Ranked others (distance, label), ties by index:
#   q0 at 0, A:  1 (2, A), 2 (2, B) tied -> 1 first; 3 (4, B); 4 (5, A)
#                P@1 1, R-precision 1/2, MAP@R (1 + 0) / 2 = 1/2
#   q1 at 2, A:  0 (2, A), 3 (2, B) tied -> 0 first; 4 (3, A); 2 (4, B)
#                P@1 1, R-precision 1/2, MAP@R (1 + 0) / 2 = 1/2
#   q2 at -2, B: 0 (2, A); 1 (4, A); 3 (6, B)           P@1 0, R-precision 0, MAP@R 0
#   q3 at 4, B:  4 (1, A); 1 (2, A); 0 (4, A); 2 (6, B)  P@1 0, R-precision 0, MAP@R 0
#   q4 at 5, A:  3 (1, B); 1 (3, A); 0 (5, A)
#                P@1 0, R-precision 1/2, MAP@R (0 + 1/2) / 2 = 1/4
# Means over the five queries: P@1 2/5, R-precision 1.5/5 = 0.3, MAP@R 1.25/5 = 0.25.
# (Were the ties broken the other way, q0 and q1 would have P@1 0 and MAP@R 1/4; were q5
# counted, with 0 everywhere, the means would be over six.)
LINE = [[0.0, 0.0], [2.0, 0.0], [-2.0, 0.0], [4.0, 0.0], [5.0, 0.0], [50.0, 0.0]]
LINE_LABELS = [0, 0, 1, 1, 0, 2]
BY_HAND = {"precision_at_1": 0.4, "r_precision": 0.3, "map_at_r": 0.25}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk_size", [None, 1, 4])
def test_hand_computed_values(dtype, chunk_size):
    got = retrieval_metrics(torch.tensor(LINE, dtype=dtype), torch.tensor(LINE_LABELS),
                            chunk_size=chunk_size)
    assert got == pytest.approx(BY_HAND, rel=1e-12)
    assert loop_metrics(LINE, LINE_LABELS) == pytest.approx(BY_HAND, rel=1e-12)


def test_coincident_points_rank_by_index():
    # Three coincident points (0, 1, 2) of labels 0, 1, 0, and 3 (label 1) far away; R = 1 for all.
    #   q0: 1 (d 0, label 1) before 2 (d 0, label 0): P@1 0, R-precision 0, MAP@R 0
    #   q1: 0, 2 (label 0), 3: 0, 0, 0
    #   q2: 0 (d 0, label 0) before 1: 1, 1, 1
    #   q3: 0, 1, 2 all at the same distance, 0 (label 0) first: 0, 0, 0
    x = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [5.0, 5.0]])
    labels = [0, 1, 0, 1]
    got = retrieval_metrics(x, torch.tensor(labels))
    assert got == pytest.approx({"precision_at_1": 0.25, "r_precision": 0.25, "map_at_r": 0.25})
    assert loop_metrics(x.tolist(), labels) == pytest.approx(got, rel=1e-12)


@pytest.mark.parametrize("dim,classes,n", [(2, 3, 60), (5, 7, 80), (128, 10, 150)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_data_matches_the_loop(dim, classes, n, dtype):
    g = torch.Generator().manual_seed(dim)
    labels = torch.randint(0, classes, (n,), generator=g)
    features = (torch.randn(n, dim, generator=g, dtype=torch.float64)
                + 1.5 * torch.randn(classes, dim, generator=g, dtype=torch.float64)[labels])
    features = features.to(dtype)
    labels[0] = classes  # and a class of one sample
    expected = loop_metrics(features.double().tolist(), labels.tolist())
    for chunk_size in (None, 7):
        got = retrieval_metrics(features, labels, chunk_size=chunk_size)
        assert got == pytest.approx(expected, rel=1e-9 if dtype == torch.float64 else 1e-5)


def test_perfect_and_degenerate_cases():
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [10.1, 0.0], [10.2, 0.0]])
    assert retrieval_metrics(x, torch.tensor([0, 0, 1, 1, 1])) == pytest.approx(
        {"precision_at_1": 1.0, "r_precision": 1.0, "map_at_r": 1.0})
    # every class of one sample: no query counts
    assert retrieval_metrics(x, torch.arange(5)) == {"precision_at_1": None, "r_precision": None,
                                                     "map_at_r": None}
    assert retrieval_metrics(x[:1], torch.tensor([0]))["map_at_r"] is None


def test_fast_ranking_equals_the_explicit_one():
    """The float32 path (one topk over a key with the index in its low bits) ranks exactly as
    ranked(): by value, then index, also with many ties, +inf and -0.0."""
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        d = torch.randint(0, 4, (30, 50), generator=g).float()
        d[0, 7], d[1, :5] = -0.0, float("inf")
        for k in (1, 9, 49):
            assert torch.equal(nearest_others(d, k), ranked(d, k))
            order = [sorted(range(50), key=lambda j: (d[i, j].item(), j))[:k] for i in range(30)]
            assert nearest_others(d, k).tolist() == order
