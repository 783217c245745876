from collections import defaultdict

from training.data.synth.corpus import SynthConfig, available_voices
from training.data.synth.split import split_voices, text_split
from training.data.synth.voices import Voice


def test_real_inventory_split_holds_out_speakers_per_engine(tmp_path) -> None:
    voices = available_voices(SynthConfig(out=tmp_path, hours=0.01))
    pools = split_voices(voices, seed=0)
    train_groups = {v.group for v in pools["train"]}
    test_groups = {v.group for v in pools["test"]}
    assert not train_groups & test_groups
    assert set(pools["train"]) <= set(pools["dev"])
    groups_per_engine: dict[str, set[str]] = defaultdict(set)
    for v in voices:
        groups_per_engine[v.engine].add(v.group)
    for engine, groups in groups_per_engine.items():
        assert any(v.engine == engine for v in pools["train"]), engine
        if len(groups) >= 2:
            assert any(v.engine == engine for v in pools["test"]), engine
    assert len(voices) >= 100  # espeak-ng accents x variants alone give hundreds


def test_cross_engine_speaker_is_held_out_everywhere() -> None:
    voices = [Voice("a", f"a{i}", f"g{i}") for i in range(4)] + [
        Voice("b", "b0", "g0"), Voice("b", "b1", "h1"), Voice("b", "b2", "h2")]
    for seed in range(20):
        pools = split_voices(voices, seed=seed)
        test_groups = {v.group for v in pools["test"]}
        assert not test_groups & {v.group for v in pools["train"]}


def test_text_split_is_stable_and_proportional() -> None:
    texts = [f"sentence number {i}" for i in range(20000)]
    splits = [text_split(t) for t in texts]
    assert splits == [text_split(t) for t in texts]
    frac = {s: splits.count(s) / len(splits) for s in ("train", "dev", "test")}
    assert 0.88 < frac["train"] < 0.92 and 0.04 < frac["test"] < 0.06
