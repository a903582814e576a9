"""Simulated households: base units and call buttons speaking device protocol v1 over MQTT.

The public surface is small: build a device list, describe the run in
``SimulationSettings``, and ``await Simulation(settings, devices).run()``.
"""

from __future__ import annotations

from device_sim.counters import SimulationCounters, SimulationSummary
from device_sim.district import (
    BASE_UNIT,
    CALL_BUTTON,
    DeviceSpec,
    district_devices,
    household_code,
    load_devices_from_database,
)
from device_sim.groundtruth import (
    GroundTruth,
    GroundTruthError,
    GroundTruthEvent,
    LossCheck,
    check_losses,
    read_ground_truth,
)
from device_sim.settings import (
    DEFAULT_KIND_WEIGHTS,
    SimulationSettings,
    SimulatorConfigError,
    parse_kind_weights,
    parse_storm,
)
from device_sim.simulation import Simulation

__all__ = [
    "BASE_UNIT",
    "CALL_BUTTON",
    "DEFAULT_KIND_WEIGHTS",
    "DeviceSpec",
    "GroundTruth",
    "GroundTruthError",
    "GroundTruthEvent",
    "LossCheck",
    "Simulation",
    "SimulationCounters",
    "SimulationSettings",
    "SimulationSummary",
    "SimulatorConfigError",
    "check_losses",
    "district_devices",
    "household_code",
    "load_devices_from_database",
    "parse_kind_weights",
    "parse_storm",
    "read_ground_truth",
]
