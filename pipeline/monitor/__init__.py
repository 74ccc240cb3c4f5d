"""Loop health: diversity and engagement of what is published, drift alerts."""
