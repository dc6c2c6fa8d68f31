import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from tunewise.backends.local import LocalBackend
from tunewise.backends.base import messages, ScoreRequest, GenerationRequest

def test_smoke(tiny_llama_dir):
    b = LocalBackend(f"hf:{tiny_llama_dir}")
    print(b.info, b._eot_id, b._stop_ids)
    p = messages(("user","Is the sky blue? Answer yes or no."))
    print(repr(b.render(p)))
    r = ScoreRequest(p, ("yes","no","card arrival","card","card linking"), answer_prefix="Label: ")
    print(b.score([r])[0]); print(b.score_naive([r])[0])
    g = b.generate([GenerationRequest(p, max_new_tokens=10)]); print(g)
