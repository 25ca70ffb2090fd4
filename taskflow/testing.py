"""Embed TaskFlow in your own tests (asyncio or trio):

```python
from taskflow import TaskRegistry
from taskflow.testing import embedded

async with embedded(registry, concurrency=8) as tf:
    job = await tf.wait(await tf.submit("echo", {"x": 1}), timeout=10)
```
"""

from taskflow.main import EmbeddedTaskFlow, embedded

__all__ = ["EmbeddedTaskFlow", "embedded"]
