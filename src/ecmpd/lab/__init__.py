"""Network-namespace labs: an ecmpd router with several ISPs and a shared internet."""

from ecmpd.lab.labconfig import lab_config, write_lab_config
from ecmpd.lab.layout import IspInfo, Lab, plan_lab
from ecmpd.lab.netns import popen_in, run_in
from ecmpd.lab.topology import (
    add_lan_clients,
    build_lab,
    destroy_lab,
    isp_link_down,
    isp_link_up,
    lab_session,
    load_lab,
    save_lab,
)

__all__ = [
    "IspInfo",
    "Lab",
    "add_lan_clients",
    "build_lab",
    "destroy_lab",
    "isp_link_down",
    "isp_link_up",
    "lab_config",
    "lab_session",
    "load_lab",
    "plan_lab",
    "popen_in",
    "run_in",
    "save_lab",
    "write_lab_config",
]
