"""The ops side of a fleet: the console (model, screen, MQTT edge), its Prometheus exporter and the fleet simulator.

Everything here reads or imitates what agents publish on MQTT (docs/mqtt.md); nothing here runs inside an agent.
May import the packages below it (``agent.domain`` to ``agent.service``; in practice domain, dispatch for the alert
texts and mqtt for the command signatures); only ``agent.cli`` imports it.
"""
