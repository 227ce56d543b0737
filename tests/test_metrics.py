"""labkit.metrics: class weights, predictions, confusion matrix, per-class report and its plot."""
from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn
from torch.utils.data import Subset, TensorDataset

from labkit.metrics import (
    class_counts,
    class_report,
    class_weights,
    confusion_matrix,
    plot_confusion_matrix,
    predict,
    sample_weights,
)


def test_class_weights_balance_the_total_weight_of_each_class():
    y = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    w = class_weights(y)
    torch.testing.assert_close(w, torch.tensor([10 / 18, 10 / 9, 10 / 3]))
    totals = w * class_counts(y)
    torch.testing.assert_close(totals, torch.full((3,), 10 / 3))  # each class weighs the same in the loss
    torch.testing.assert_close((w[y]).mean(), torch.tensor(1.0))  # and the loss keeps its scale


def test_class_weights_read_datasets_and_subsets():
    ds = TensorDataset(torch.zeros(6, 1), torch.tensor([0, 0, 1, 1, 1, 2]))
    assert class_counts(ds).tolist() == [2, 3, 1]
    assert class_counts(Subset(ds, [0, 2, 5])).tolist() == [1, 1, 1]

    class Folder:
        targets = [1, 1, 0]
    torch.testing.assert_close(class_weights(Folder()), torch.tensor([1.5, 0.75]))


def test_class_weights_refuse_an_empty_class_and_bad_labels():
    with pytest.raises(ValueError, match="class\\(es\\) \\[1\\] have no images"):
        class_weights([0, 0, 2])
    with pytest.raises(ValueError, match="num_classes=2"):
        class_counts([0, 3], num_classes=2)
    with pytest.raises(TypeError, match="integer class labels"):
        class_weights(torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="expected labels"):
        class_weights("abc")
    with pytest.raises(ValueError, match="no labels"):
        class_counts([])


def test_sample_weights_draw_each_class_equally_often():
    y = torch.tensor([0] * 90 + [1] * 10)
    w = sample_weights(y)
    assert w[:90].sum().item() == pytest.approx(w[90:].sum().item())
    g = torch.Generator().manual_seed(0)
    draws = y[torch.multinomial(w, 4000, replacement=True, generator=g)]
    assert 0.45 < draws.float().mean().item() < 0.55


def test_confusion_matrix_rows_are_true_classes():
    cm = confusion_matrix(torch.tensor([0, 2, 2, 1]), torch.tensor([0, 1, 2, 1]), num_classes=4)
    assert cm.tolist() == [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="3 predictions but 2 true labels"):
        confusion_matrix([0, 1, 1], [0, 1])


def test_class_report_recall_precision_and_balanced_accuracy():
    # 8 images of class 0 all found, 2 of class 1 both called class 0: accuracy 0.8, balanced 0.5
    cm = confusion_matrix([0] * 10, [0] * 8 + [1] * 2, num_classes=2)
    r = class_report(cm, classes=["common", "rare"])
    assert r.recall == (1.0, 0.0) and r.precision == (0.8, 0.0) and r.support == (8, 2)
    assert r.accuracy == pytest.approx(0.8) and r.balanced_accuracy == pytest.approx(0.5)
    assert "rare" in str(r) and "balanced accuracy (mean recall) 0.500" in str(r)
    with pytest.raises(ValueError, match="square confusion matrix"):
        class_report(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="2 class names for a 3x3"):
        class_report(torch.eye(3), classes=["a", "b"])


def test_predict_restores_the_mode_and_returns_labels():
    model = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5)).train()
    model[0].weight.data = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    model[0].bias.data.zero_()
    data = [(torch.tensor([[2.0, 0, 0], [0, 2.0, 0]]), torch.tensor([0, 0]))]
    pred, true = predict(model, data)
    assert pred.tolist() == [0, 1] and true.tolist() == [0, 0]  # dropout was off
    assert model.training and model[1].training


def test_plot_confusion_matrix_returns_a_figure_and_leaves_its_input_alone():
    cm = torch.tensor([[5, 1], [2, 2]])
    before = cm.clone()
    fig = plot_confusion_matrix(cm, classes=["a", "b"])
    assert isinstance(fig, Figure) and torch.equal(cm, before)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "0.83\n(5)" in texts and "0.50\n(2)" in texts
    with pytest.raises(ValueError, match="3 class names"):
        plot_confusion_matrix(cm, classes=["a", "b", "c"])
