"""runner_api."""
