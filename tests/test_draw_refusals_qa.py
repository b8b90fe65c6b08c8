"""fg.viz.draw of something it cannot draw: a UsageError (still a TypeError) naming what
it takes and the user's line. An error other than a NumericsError (a FeedError, say,
caught around a call and drawn like a NumericsError) raised a bare TypeError,
"'FeedError' object is not iterable"."""
import pytest

import flowgrad as fg


@pytest.mark.parametrize("what", [fg.FeedError("missing feed"), 3.0, None, [], ["x"]])
def test_draw_refuses_what_it_cannot_draw(what):
    with pytest.raises(fg.UsageError, match=r"draw takes a Trace.*NumericsError") as info:
        fg.viz.draw(what)
    assert isinstance(info.value, TypeError)
    assert "test_draw_refusals_qa.py" in str(info.value)


def test_a_list_of_nodes_still_draws():
    with fg.Graph():
        x = fg.placeholder("x", shape=(3,))
        assert fg.viz.draw((fg.sum(x * x), )) is not None
