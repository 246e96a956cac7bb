"""Realistic subjects from the MNI152 template: anatomy, lesions with ground truth, geometry,
determinism, the template's sources, the napari samples and the benchmark's data source."""

from __future__ import annotations

import numpy as np
import pytest

from napari_vae_anomaly.data import mni_template
from napari_vae_anomaly.data.realistic import LABELS, TEST_KINDS, lesion_subjects, make_subject

pytestmark = pytest.mark.skipif(not mni_template.template_available(),
                                reason="MNI152 template not installed (realistic extra)")


def test_template_is_real_anatomy_at_each_spacing():
    t2 = mni_template.load_template(2)
    t3 = mni_template.load_template(3)
    assert t2.shape == (94, 116, 98) and t3.shape == (63, 77, 65)
    assert t2.spacing == 2.0
    # skull-stripped adult brain: about 1.5 litres of brain, tissue maps that add up
    litres = t2.brain.sum() * 8e-6
    assert 1.3 < litres < 2.0
    total = (t2.gm + t2.wm + t2.csf)[t2.brain]  # partial volume at the outline only
    assert np.median(total) > 0.97 and total.max() < 1.05 and (total > 0.9).mean() > 0.8
    # white matter is brighter than grey matter on the T1 template
    assert t2.t1[t2.wm > 0.9].mean() > t2.t1[t2.gm > 0.9].mean() + 0.1
    # the first 2 mm block's centre sits half a voxel inside the 1 mm grid's first voxel
    t1 = mni_template.load_template(1)
    d = np.asarray(t1.direction).reshape(3, 3)
    assert np.allclose(np.asarray(t2.origin), np.asarray(t1.origin) + d @ np.full(3, 0.5))


def test_template_npz_gives_the_same_arrays(tmp_path, monkeypatch):
    path = mni_template.save_template_npz(tmp_path / "mni.npz")
    ref = mni_template.load_template(3)
    monkeypatch.setattr(mni_template, "template_folder", lambda: None)
    monkeypatch.setenv(mni_template.TEMPLATE_ENV, str(path))
    mni_template.load_template.cache_clear()
    try:
        other = mni_template.load_template(3)
        assert np.allclose(other.t1, ref.t1, atol=1 / 255) and np.array_equal(other.brain, ref.brain)
        monkeypatch.delenv(mni_template.TEMPLATE_ENV)
        mni_template.load_template.cache_clear()
        with pytest.raises(mni_template.TemplateMissing, match="realistic"):
            mni_template.load_template(3)
    finally:
        mni_template.load_template.cache_clear()


def test_normal_subjects_differ_and_seeds_repeat():
    a = make_subject(1000, (), spacing=3)
    b = make_subject(1001, (), spacing=3)
    again = make_subject(1000, (), spacing=3)
    assert np.array_equal(a.image, again.image)
    assert not np.array_equal(a.brain_mask, b.brain_mask)  # deformed anatomy
    assert a.lesion_mask.max() == 0 and not a.lesions
    assert (a.image[~a.brain_mask] == 0).all() and (a.image[a.brain_mask] > 0).mean() > 0.99
    # FLAIR-like contrast: CSF dark, grey matter brighter than white matter
    t = mni_template.load_template(3)
    s = make_subject(1002, (), "flair", spacing=3)
    deep_wm = (t.wm > 0.95) & s.brain_mask  # small deformations keep deep white matter inside
    cortex = (t.gm > 0.95) & s.brain_mask
    assert np.median(s.image[cortex]) > 1.05 * np.median(s.image[deep_wm])
    # ventricles and sulci: the darkest tenth of the brain is far below white matter
    assert np.percentile(s.image[s.brain_mask], 3) < 0.6 * np.median(s.image[deep_wm])


@pytest.mark.parametrize("kind, brighter", [("tumour", True), ("wmh", True), ("stroke", False)])
def test_each_lesion_kind_has_truth_and_its_contrast(kind, brighter):
    s = make_subject(5, (kind,), "flair", spacing=2)
    lab = s.lesion_mask == LABELS[kind]
    assert lab.any() and set(np.unique(s.lesion_mask)) == {0, LABELS[kind]}
    assert (lab <= s.brain_mask).all()
    assert s.lesions[0].kind == kind and s.lesions[0].voxels == int(lab.sum())
    ring = np.logical_and(s.brain_mask, ~lab)
    inside, outside = np.median(s.image[lab]), np.median(s.image[ring])
    assert (inside > outside) if brighter else (inside < outside)
    geo = s.volume.geometry
    assert geo.spacing == (2.0, 2.0, 2.0) and s.lesion_volume.geometry == geo


def test_test_cohort_cycles_the_kinds():
    subjects = list(lesion_subjects(4, spacing=3))
    assert [tuple(les.kind for les in s.lesions) for s in subjects] == list(TEST_KINDS)
    mixed = subjects[3]
    assert set(np.unique(mixed.lesion_mask)) == {0, 1, 2, 3}


def test_samples_for_napari():
    from napari_vae_anomaly._sample_data import sample_mni_normal, sample_mni_with_lesions

    (img, kw, kind), (truth, tkw, tkind) = sample_mni_with_lesions()
    assert kind == "image" and tkind == "labels" and img.shape == truth.shape == (94, 116, 98)
    assert tuple(kw["scale"]) == (2.0, 2.0, 2.0) and "geometry" in kw["metadata"]
    assert set(np.unique(truth)) == {0, 1, 2, 3}
    ((normal, nkw, nkind),) = sample_mni_normal()
    assert nkind == "image" and normal.shape == img.shape and normal.max() > 0


def test_study_data_source_and_pooled_scores():
    from napari_vae_anomaly.study.config import StudyConfig
    from napari_vae_anomaly.study.phantom_data import load_study_data
    from napari_vae_anomaly.study.realistic_data import pooled_scores

    cfg = StudyConfig.default_realistic("/tmp/unused", n_normal=2, n_test=2,
                                        extra={"spacing": 3, "n_reference": 1})
    assert cfg.time_budget == 900.0 and cfg.data == "mni"
    data = load_study_data(cfg, log=lambda _m: None)
    assert len(data.train) == 2 and len(data.reference) == 1 and len(data.test) == 2
    assert data.test[0].truth.any() and "MNI152" in data.description
    # a perfect map and a useless one
    truth = [c.truth for c in data.test]
    brains = [c.volume.data > 0 for c in data.test]
    perfect = pooled_scores([t.astype(np.float32) for t in truth], truth, brains)
    assert perfect["auroc"] == 1.0 and perfect["auprc"] == 1.0 and perfect["oracle_dice"] == 1.0
    flat = pooled_scores([np.zeros(t.shape, np.float32) for t in truth], truth, brains)
    assert flat["auroc"] == 0.5
