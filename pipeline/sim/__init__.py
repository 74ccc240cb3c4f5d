"""Simulation: the synthetic world and its listeners, the closed loop, exploration tuning, the OPE experiment."""
