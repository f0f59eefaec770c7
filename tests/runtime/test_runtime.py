"""Each model owns its runtime (device, threads): loading or using another model never changes it."""
import pytest
from helpers import IMAGE

import convlens
from convlens.engine.errors import ConvlensError
from convlens.engine.runtime.session import Runtime


def test_two_models_keep_their_own_threads_across_calls_on_paths(tiny_torch, monkeypatch):
    made = []
    original = Runtime.session

    def recording(self, proto, weights):
        session = original(self, proto, weights)
        made.append((self, session.get_session_options().intra_op_num_threads))
        return session

    monkeypatch.setattr(Runtime, "session", recording)
    one = convlens.load(tiny_torch["path"], threads=1)
    two = convlens.load(tiny_torch["path"], threads=2)
    convlens.cam(tiny_torch["path"], str(IMAGE))  # a call on a path: a third model with the default runtime
    made.clear()
    convlens.cam(one, str(IMAGE))
    convlens.saliency(one, str(IMAGE), method="smoothgrad", samples=2)
    assert made and all(runtime is one.runtime and threads == 1 for runtime, threads in made)
    made.clear()
    convlens.cam(two, str(IMAGE))
    assert made and all(runtime is two.runtime and threads == 2 for runtime, threads in made)
    assert one.runtime == Runtime("cpu", 1) and two.runtime == Runtime("cpu", 2)


def test_runtime_settings_are_checked_when_loading(tiny_torch):
    with pytest.raises(ConvlensError, match=r"^--threads must be 0 \(automatic\) or a positive number, not -1\.$"):
        convlens.load(tiny_torch["path"], threads=-1)
    with pytest.raises(ConvlensError, match=r"^Unknown device 'tpu'; use cpu or cuda\.$"):
        convlens.load(tiny_torch["path"], device="tpu")
