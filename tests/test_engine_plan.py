"""The declared plan (flowgrad/engine/plan.py): its records, its printer, and the
verifier, which must catch a hand-broken plan at the boundary (a slot read one step
before it is written, a free one step early), not only far-out breakage."""
import dataclasses

import numpy as np
import pytest

import flowgrad as fg
from flowgrad.engine import FlatSteps, Plan, PlanError, Step, format_plan, verify
from flowgrad.engine import plan as plan_mod


def _program():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        h = fg.sin(x) * x
        y = fg.sum(h + 2.0)
        outs = [y, fg.grad(y, x)]
        return fg.compile(outs, codegen=False), x, y


def _with_steps(plan, steps):
    return dataclasses.replace(plan, steps=steps)


def test_steps_are_typed_records_in_execution_order():
    prog, x, y = _program()
    plan = prog.plan
    steps = list(plan.steps)
    assert all(type(st) is Step for st in steps) and len(steps) == prog.n_steps
    assert plan.leaves == {x.id: prog.slot_of[x.id]}
    assert plan.outputs == (prog.slot_of[y.id], prog.slot_of[prog.outputs[1].id])
    for st in steps:
        assert plan.slots[st.out] == st.node        # the slot holds the step's node
        assert isinstance(st.ins, tuple) and isinstance(st.frees, tuple)
    assert verify(plan) is plan
    assert sum(1 for v in plan.consts if v is not None) == 1      # the 2.0


def test_the_printer_lists_one_line_a_step_with_name_line_and_frees():
    prog, x, y = _program()
    text = str(prog.plan)
    assert text == format_plan(prog.plan)
    lines = text.splitlines()
    assert lines[0] == f"%{prog.slot_of[x.id]} = leaf  # x"
    steps = list(prog.plan.steps)
    body = [ln for ln in lines if " = sin(" in ln or " = mul(" in ln or " = add(" in ln]
    assert len(body) == sum(st.op.name in ("sin", "mul", "add") for st in steps)
    first = steps[0]
    want = f"%{first.out} = {first.op.name}(" + ", ".join(f"%{s}" for s in first.ins) + ")"
    assert any(ln.startswith(want) and "test_engine_plan.py:" in ln for ln in lines)
    freeing = next(st for st in steps if st.frees)
    assert any("frees " + ", ".join(f"%{s}" for s in freeing.frees) in ln for ln in lines)
    assert lines[-1] == "return " + ", ".join(f"%{s}" for s in prog.plan.outputs)
    assert "axis=(0,)" in text                      # attrs are shown


def test_verifier_catches_a_read_one_step_before_the_write():
    prog, _, _ = _program()
    steps = list(prog.plan.steps)
    # step k reads the slot step k-1 writes: swap them, and k reads it one step early
    k = next(i for i in range(1, len(steps)) if steps[i - 1].out in steps[i].ins)
    broken = steps[:k - 1] + [steps[k], steps[k - 1]] + steps[k + 1:]
    with pytest.raises(PlanError, match=f"step {k - 1} .* reads slot %{steps[k - 1].out}"):
        verify(_with_steps(prog.plan, broken))
    verify(_with_steps(prog.plan, steps))          # the boundary: in order, it passes


def test_verifier_catches_a_free_one_step_early():
    prog, _, _ = _program()
    steps = list(prog.plan.steps)
    # a slot freed by step k (its last reader): freed at step k-1 instead
    k = next(i for i in range(1, len(steps))
             if steps[i].frees and steps[i].frees[0] not in steps[i - 1].frees
             and steps[i].frees[0] != steps[i - 1].out)
    s = steps[k].frees[0]
    early = [dataclasses.replace(steps[k - 1], frees=steps[k - 1].frees + (s,)),
             dataclasses.replace(steps[k], frees=tuple(f for f in steps[k].frees if f != s))]
    broken = steps[:k - 1] + early + steps[k + 1:]
    with pytest.raises(PlanError, match=f"step {k} .* reads slot %{s}"):
        verify(_with_steps(prog.plan, broken))


def test_verifier_refuses_a_freed_output_a_double_write_and_a_wrong_dtype():
    prog, _, _ = _program()
    steps = list(prog.plan.steps)
    out = prog.plan.outputs[0]
    k = next(i for i, st in enumerate(steps) if st.out == out)
    freeing = steps[:k + 1] + [dataclasses.replace(steps[k + 1], frees=steps[k + 1].frees
                                                   + (out,))] + steps[k + 2:]
    with pytest.raises(PlanError, match="frees output slot"):
        verify(_with_steps(prog.plan, freeing))
    twice = steps[:1] + [dataclasses.replace(steps[1], out=steps[0].out,
                                             node=steps[0].node)] + steps[2:]
    with pytest.raises(PlanError, match="writes slot"):
        verify(_with_steps(prog.plan, twice))
    # a rewrite that changes a step's op to one inferring another dtype
    cast = [dataclasses.replace(st, op=fg.ops.REGISTRY["greater"], ins=st.ins * 2)
            if st.op.name == "sin" else st for st in steps]
    with pytest.raises(PlanError, match="infers dtype bool"):
        verify(_with_steps(prog.plan, cast))
    verify(_with_steps(prog.plan, cast), shapes=False)      # slots alone still agree


def test_a_sub_plan_in_attrs_is_printed_indented_and_verified():
    prog, _, _ = _program()
    inner = prog.plan
    steps = list(inner.steps)
    loop = dataclasses.replace(steps[0], attrs={"body": inner})
    outer = _with_steps(inner, [loop] + steps[1:])
    text = format_plan(outer)
    assert "\n    %" in text and text.count("return ") == 2
    verify(outer, shapes=False)
    bad_inner = _with_steps(inner, steps[1:2] + steps[:1] + steps[2:])
    nested = _with_steps(inner, [dataclasses.replace(steps[0], attrs={"body": bad_inner})]
                         + steps[1:])
    with pytest.raises(PlanError):
        verify(nested, shapes=False)


def test_flat_steps_read_as_the_same_records(monkeypatch):
    from flowgrad.engine import program as scheduler
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        y = fg.sum(fg.stack([x, fg.exp(x), x * x]) * 2.0)
        outs = [y, fg.grad(y, x)]
        plain = fg.compile(outs, codegen=False)
        monkeypatch.setattr(scheduler, "FLAT_STEPS", 0)
        flat = fg.compile(outs, codegen=False)
    assert isinstance(flat.plan.made_steps(), FlatSteps) and flat.plan.flat
    assert list(flat.plan.steps) == list(plain.plan.steps)
    assert [flat.plan.steps[k] for k in range(len(flat.plan))] == list(plain.plan.steps)
    assert str(flat.plan) == str(plain.plan)
    verify(flat.plan)
    X = np.array([0.5, -1.0, 2.0])
    for a, b in zip(flat(x=X), plain(x=X)):
        np.testing.assert_array_equal(a, b)


def test_the_debug_flag_verifies_every_compiled_plan(monkeypatch):
    calls = []
    real = plan_mod.verify
    monkeypatch.setattr(plan_mod, "verify", lambda p, *a: calls.append(p) or real(p, *a))
    monkeypatch.setenv("FLOWGRAD_DEBUG", "1")
    prog, _, _ = _program()
    assert calls == [prog.plan]
    monkeypatch.setenv("FLOWGRAD_DEBUG", "0")
    _program()
    assert len(calls) == 1


def test_a_plan_can_be_made_by_hand_and_run():
    from flowgrad.engine.executors import INTERPRETER
    from flowgrad.backends import get_backend
    with fg.Graph() as g:
        x = fg.placeholder("x", shape=(2,))
        y = fg.exp(x)
    plan = Plan({x.id: 0}, [None, None], [Step(y.op, {}, y.id, (0,),
                                               1, (0,))], (1,), [x.id, y.id], g)
    verify(plan)
    vals = INTERPRETER.build(plan, get_backend("numpy"))([np.zeros(2), None])
    assert vals[0] is None and np.array_equal(vals[1], np.ones(2))
