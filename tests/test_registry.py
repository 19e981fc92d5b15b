import pytest

from pipeline.errors import JmtError
from pipeline.registry import Registry, RegistryError


def test_register_and_get_by_decorator():
    reg = Registry("fusion head")

    @reg.register("jmt")
    class JMT:
        pass

    @reg.register()
    def concat():
        return 1

    assert reg.get("jmt") is JMT
    assert reg.get("concat") is concat
    assert reg.names() == ["concat", "jmt"]
    assert "jmt" in reg and "mt" not in reg
    assert len(reg) == 2 and list(reg) == ["concat", "jmt"]


def test_duplicate_name_is_an_error():
    reg = Registry("backbone")
    reg.add("resnet18", object())
    with pytest.raises(RegistryError, match="backbone 'resnet18' is already registered"):
        reg.add("resnet18", object())
    with pytest.raises(RegistryError):

        @reg.register("resnet18")
        class Other:
            pass


def test_unknown_name_lists_known_names():
    reg = Registry("temporal encoder")
    reg.add("tcn", 1)
    reg.add("gru", 2)
    with pytest.raises(RegistryError) as info:
        reg.get("lstm")
    assert str(info.value) == "unknown temporal encoder 'lstm'; known: gru, tcn"
    assert isinstance(info.value, JmtError) and isinstance(info.value, KeyError)


def test_empty_registry_says_so():
    with pytest.raises(RegistryError, match=r"known: \(none registered\)"):
        Registry("head").get("x")


@pytest.mark.parametrize("bad", ["", None, 3])
def test_bad_names_rejected(bad):
    with pytest.raises(RegistryError, match="non-empty strings"):
        Registry("head").add(bad, object())


def test_the_pipelines_registries_refuse_a_second_registration_and_list_the_known():
    from pipeline.stage1.backbones import BACKBONES
    from pipeline.stage2.heads import HEADS
    from pipeline.stage2.layers import TEMPORAL
    from pipeline.tasks import TASKS

    for reg, kind, taken in ((TASKS, "task", "va"), (BACKBONES, "backbone", "fer_xception"),
                             (HEADS, "fusion head", "jmt"), (TEMPORAL, "temporal encoder", "tcn")):
        with pytest.raises(RegistryError, match=f"{kind} '{taken}' is already registered"):
            reg.add(taken, object())
        with pytest.raises(RegistryError) as info:
            reg.get("nope")
        assert str(info.value) == f"unknown {kind} 'nope'; known: {', '.join(reg.names())}"
    assert {"au", "expr", "va"} <= set(TASKS.names())   # the Aff-Wild2 tasks; a new task file adds to them
