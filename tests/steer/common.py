"""What the steering tests share: a prompt of the tiny vocabulary and a hook counter."""



PROMPT = "the cat sat on the mat . a dog ran"


def _n_hooks(lm):
    return sum(len(m._forward_hooks) for m in lm.model.modules())
