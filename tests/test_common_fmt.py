from speechbench.common.fmt import met, num, pct


def test_num_formats_what_reports_show():
    assert num(None) == "n/a" and num("x") == "n/a" and num(float("nan")) == "n/a"
    assert num(3.14159, 2) == "3.14" and num(12345.6) == "12,346" and num(2.5, 0, " s") == "2 s"
    assert num(7) == "7" and num(7, suffix=" ms") == "7 ms"
    assert num(True) == "yes" and num(False) == "no"


def test_pct_and_met():
    assert pct(0.169) == "16.9%" and pct(0.5, 0) == "50%" and pct(None) == "n/a" and pct(True) == "n/a"
    assert met(True) == "**met**" and met(False) == "**not met**" and met(None) == "not measured"
