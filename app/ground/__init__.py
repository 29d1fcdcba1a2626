"""What everything stands on: settings, time, names, statuses, steps, logs, JSON, metrics."""
