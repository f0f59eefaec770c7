"""The report, sanity and verify hand prepared pixels (already fitted to the input) to the techniques: on a
center-crop model they must not be cropped a second time. The report's maps and predictions equal `convlens cam`'s
on the photo itself; a check that cannot tell the two apart is shown to tell them apart."""
import cv2
import numpy as np

import convlens
from convlens.engine.render.images import sample_image
from convlens.engine.techniques.common import prepare


def test_the_report_on_a_center_crop_model_crops_once(lite0):
    model = convlens.load(lite0.path, resize="center-crop")
    photo = cv2.resize(sample_image(), (360, 200)).astype(np.float32)
    _, results = convlens.api.report(model, [photo], filter_steps=2)
    (entry,) = results["images"]
    maps, top = convlens.cam(model, photo, target="top2")
    assert [i for i, _, _ in entry["top5"]] == [i for i, _, _ in top[0]]
    for cam, mine in zip([c for c in entry["cams"] if c["method"] == "gradcam"], maps[0]):
        peak = np.unravel_index(np.argmax(mine.heatmap), mine.heatmap.shape)
        assert cam["class"] == mine.class_index and cam["peak_yx"] == [int(peak[0]), int(peak[1])]
    fitted = prepare(model, [photo])[0]
    twice, _ = convlens.cam(model, fitted, target="top2")  # what a second crop gives
    assert np.abs(twice[0][0].heatmap - maps[0][0].heatmap).max() > 0.05
    (once,), _ = convlens.cam(model.placed(), fitted, target="top2")
    assert np.abs(once[0].heatmap - maps[0][0].heatmap).max() < 1e-5


def test_guided_gradcam_on_a_center_crop_model_is_guided_backprop_times_the_photos_cam(lite0):
    model = convlens.load(lite0.path, resize="center-crop")
    photo = cv2.resize(sample_image(), (360, 200)).astype(np.float32)
    (guided,) = convlens.saliency(model, photo, method="guided-backprop")
    (both,) = convlens.saliency(model, photo, method="guided-gradcam")
    ((cam,),), _ = convlens.cam(model, photo, target=guided.class_index)
    np.testing.assert_allclose(both.attribution, guided.attribution * cam.heatmap[..., None], rtol=1e-5,
                               atol=1e-6 * np.abs(both.attribution).max())
