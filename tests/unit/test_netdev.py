"""Reading /proc/net/dev: columns by the header, every interface, or only those asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecmpd.kernel.netdev import parse_proc_net_dev, read_interface_counters

PROC_NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    3193      29    0    0    0     0          0         0     3193      29    0    0    0     0       0          0
 wan-a:18446744073709551615 123456    7    8    0     0          0         5   654321    4321    1    2    0     0       0          0
  ppp0:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
"""  # noqa: E501 (the kernel's own line width)


def test_parse_proc_net_dev() -> None:
    counters = parse_proc_net_dev(PROC_NET_DEV)
    assert list(counters) == ["lo", "wan-a", "ppp0"]
    assert counters["wan-a"] == {
        "rx_bytes": 2**64 - 1,  # no space after the colon once the number is wide
        "rx_packets": 123456,
        "rx_errors": 7,
        "rx_dropped": 8,
        "tx_bytes": 654321,
        "tx_packets": 4321,
        "tx_errors": 1,
        "tx_dropped": 2,
    }
    assert set(counters["ppp0"].values()) == {0}


def test_parse_proc_net_dev_follows_the_header_not_positions() -> None:
    text = "Inter-|Receive|Transmit\n face |packets bytes|bytes packets\n  eth0: 3 300 400 4\n"
    counters = parse_proc_net_dev(text)["eth0"]
    assert (counters["rx_bytes"], counters["rx_packets"]) == (300, 3)
    assert (counters["tx_bytes"], counters["tx_packets"]) == (400, 4)
    assert counters["rx_errors"] == 0  # a column the kernel did not give


@pytest.mark.parametrize("text", ["", "garbage\n", "one line only |\n", "a|b\n face |bytes\n"])
def test_parse_proc_net_dev_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="/proc/net/dev"):
        parse_proc_net_dev(text)


def test_read_interface_counters_filters(tmp_path: Path) -> None:
    path = tmp_path / "dev"
    path.write_text(PROC_NET_DEV)
    assert list(read_interface_counters(["wan-a", "missing"], path)) == ["wan-a"]
    assert list(read_interface_counters(None, path)) == ["lo", "wan-a", "ppp0"]


def test_read_interface_counters_of_this_namespace() -> None:
    # Reading procfs (not binding anything) is safe in the root namespace; lo always exists.
    counters = read_interface_counters(["lo"])
    assert set(counters) == {"lo"}
    assert counters["lo"]["rx_bytes"] >= 0
