"""The Kubernetes executor: one pod per task attempt, through kubernetes-asyncio.

config.py (settings), manifests.py (objects from launches; pure), states.py (pod → task state;
pure), cluster.py (the API calls, watches and log follows), executor.py (the Executor).
"""
