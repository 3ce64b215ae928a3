# %% [markdown]
# # raytasks quick start (a notebook in percent format: open it in Jupyter or VS Code)

# %%
import raytasks
from raytasks import TaskCreateRequest, TaskManager, TaskPriority, register_task_type

raytasks.connect()  # embedded local Ray; raytasks.connect("ray://head:10001") for a cluster
tm = TaskManager()

# %%
task = await tm.submit(TaskCreateRequest(  # noqa: F704 (top-level await in a notebook)
    name="股票预测任务", task_type="prediction", priority=TaskPriority.HIGH,
    parameters={"stock_code": "000001.SZ", "days": 5}))
done = await tm.wait(task.id, timeout_s=60)  # noqa: F704
done.status, done.result

# %%
def spin(params: dict, ctx: raytasks.TaskExecutionContext) -> dict:
    ctx.report_progress(0.5, "half way")
    return {"echo": params}

register_task_type("echo", spin)
tm.wait_sync(tm.submit_sync(TaskCreateRequest(name="echo", task_type="echo",
                                              parameters={"x": 1})).id).result
