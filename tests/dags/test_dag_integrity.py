"""DAG integrity: the DAGs parse, follow the project's rules, chain through assets, and stay thin.

In the spirit of Astronomer's `tests/dags/test_dag_example.py`: per-DAG checks are parametrised over
the DagBag (see `conftest.py`, which also makes Airflow hermetic and probes each DAG file in a fresh
interpreter). Static checks read the sources with `ast`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = PROJECT_ROOT / "dags"
DAG_FILES = sorted(DAGS_FOLDER.glob("*.py"))

EXPECTED_DAG_IDS = {"dailymix_features", "dailymix_retrain", "dailymix_index", "dailymix_nightly", "dailymix_monitor"}
MIN_RETRIES = 2
# Checks (`gate_task` in dags/_dailymix.py) fail the same way on the same data, so they are never retried.
GATE_TASKS = {("dailymix_nightly", "skew_gate"), ("dailymix_index", "recall_gate"), ("dailymix_monitor", "drift")}
# The decorators that make a task: Airflow's `task` and the project's `gate_task`, which wraps it.
TASK_DECORATORS = {"task", "gate_task"}
MAX_IMPORT_SECONDS = 5.0
MAX_TASK_STATEMENTS = 8

# (consumer, producer): the consumer is scheduled on exactly the asset(s) the producer's last task emits.
ASSET_CHAIN = [
    ("dailymix_index", "dailymix_retrain"),
    ("dailymix_nightly", "dailymix_features"),
    ("dailymix_monitor", "dailymix_nightly"),
]

# Must not be loaded by importing a DAG file: the heavy libraries and any of the project's own domain code.
HEAVY_PACKAGES = {"pandas", "numpy", "sklearn", "mlflow", "feast", "great_expectations", "implicit", "annoy"}
DOMAIN_PACKAGES = {"pipeline", "validation"}

# Calls that make a DAG attribute depend on when the file is parsed.
NOW_CALLS = {"now", "utcnow", "today", "days_ago"}


# --- helpers ----------------------------------------------------------------------------------------------------


def _asset_keys(condition) -> set[tuple[str, ...]]:
    """(name, uri) of every asset in a schedule's asset condition (Asset, AssetAll/AssetAny, nested)."""
    if condition is None:
        return set()
    if hasattr(condition, "objects"):  # AssetAll / AssetAny
        return set().union(*(_asset_keys(part) for part in condition.objects))
    if hasattr(condition, "uri"):  # Asset (and Dataset / Model)
        return {(condition.name, condition.uri)}
    return {(type(condition).__name__, getattr(condition, "name", repr(condition)))}  # alias / ref: never matches


def _outlet_keys(tasks) -> set[tuple[str, ...]]:
    return set().union(*(_asset_keys(outlet) for task in tasks for outlet in task.outlets))


def _flatten_topological(group) -> Iterator:
    from airflow.sdk.definitions.taskgroup import TaskGroup

    for node in group.topological_sort():
        if isinstance(node, TaskGroup):
            yield from _flatten_topological(node)
        else:
            yield node


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Call):
        return _dotted(node.func)
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _task_functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Functions decorated with Airflow's `task` (`@task`, `@task(...)`, `@task.virtualenv`, an alias of it...) or
    the project's `gate_task`."""
    names = TASK_DECORATORS | {
        alias.asname for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and (node.module or "")
        .startswith("airflow") for alias in node.names if alias.name == "task" and alias.asname
    }
    return [
        node for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and any(set(_dotted(decorator).split(".")) & names for decorator in node.decorator_list)
    ]


def _body_statements(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Every statement in the body, nested ones included (a docstring does not count)."""
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return sum(isinstance(node, ast.stmt) for statement in body for node in ast.walk(statement))


def _imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in a tree, including `importlib.import_module("x")` / `__import__("x")`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call) and _dotted(node.func) in {"importlib.import_module", "import_module",
                                                                    "__import__"} \
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            yield node.lineno, node.args[0].value


def _task_function_ids() -> list[tuple[Path, str]]:
    return [(path, function.name) for path in DAG_FILES for function in _task_functions(_parse(path))]


# --- the DagBag -------------------------------------------------------------------------------------------------


def test_airflow_uses_the_hermetic_environment(airflow_env):
    from airflow.configuration import AIRFLOW_HOME, conf
    from airflow.settings import DAGS_FOLDER as AIRFLOW_DAGS_FOLDER

    assert airflow_env["AIRFLOW_HOME"] == AIRFLOW_HOME
    assert Path(AIRFLOW_DAGS_FOLDER) == DAGS_FOLDER
    assert conf.getboolean("core", "load_examples") is False


def test_no_import_errors(dagbag):
    errors = "\n\n".join(f"--- {path}\n{error}" for path, error in sorted(dagbag.import_errors.items()))
    assert not dagbag.import_errors, f"{len(dagbag.import_errors)} DAG file(s) failed to import:\n{errors}"


def test_exactly_the_expected_dags(dagbag):
    found = set(dagbag.dags)
    assert found == EXPECTED_DAG_IDS, (
        f"missing: {sorted(EXPECTED_DAG_IDS - found)}, unexpected: {sorted(found - EXPECTED_DAG_IDS)}")


# --- per DAG ----------------------------------------------------------------------------------------------------


def test_tagged_dailymix(dag):
    assert "dailymix" in dag.tags, f"{dag.dag_id} tags: {sorted(dag.tags)}"


def test_retries(dag):
    assert (dag.default_args or {}).get("retries", 0) >= MIN_RETRIES, f"{dag.dag_id} default_args: {dag.default_args}"
    gates = {task.task_id for task in dag.tasks if (dag.dag_id, task.task_id) in GATE_TASKS}
    too_few = {task.task_id: task.retries for task in dag.tasks
               if task.task_id not in gates and (task.retries or 0) < MIN_RETRIES}
    assert not too_few, f"{dag.dag_id}: tasks with fewer than {MIN_RETRIES} retries: {too_few}"
    retried_gates = {task_id: dag.get_task(task_id).retries for task_id in gates if dag.get_task(task_id).retries}
    assert not retried_gates, f"{dag.dag_id}: checks that would be retried on the same data: {retried_gates}"


def test_doc_md_has_a_runbook(dag):
    assert dag.doc_md and dag.doc_md.strip(), f"{dag.dag_id} has no doc_md"
    assert "Runbook" in dag.doc_md, f"{dag.dag_id}: doc_md has no Runbook section"


def test_doc_md_documents_every_task_and_its_inputs_and_outputs(dag):
    """The DAG's page in the UI: each task by name, an Inputs and an Outputs line naming the assets it reads/emits."""
    doc = dag.doc_md or ""
    undocumented = [task.task_id for task in dag.tasks if f"`{task.task_id}`" not in doc]
    assert not undocumented, f"{dag.dag_id}: doc_md does not describe tasks {undocumented}"
    assert "**Inputs**" in doc and "**Outputs**" in doc, f"{dag.dag_id}: doc_md needs **Inputs** and **Outputs**"
    consumed = {name for name, _ in _asset_keys(getattr(dag.timetable, "asset_condition", None))}
    produced = {name for name, _ in _outlet_keys(dag.tasks)}
    missing = sorted(name for name in consumed | produced if f"`{name}`" not in doc)
    assert not missing, f"{dag.dag_id}: doc_md does not name the assets {missing}"


def test_no_catchup(dag):
    assert dag.catchup is False


def test_max_one_active_run(dag):
    assert dag.max_active_runs == 1


def test_start_date_is_timezone_aware(dag):
    assert isinstance(dag.start_date, datetime), f"{dag.dag_id} has no start_date"
    assert dag.start_date.utcoffset() is not None, f"{dag.dag_id}: naive start_date {dag.start_date!r}"
    naive = {task.task_id for task in dag.tasks if task.start_date and task.start_date.utcoffset() is None}
    assert not naive, f"{dag.dag_id}: tasks with a naive start_date: {sorted(naive)}"


def test_start_date_is_static(dag, dag_file_probes):
    """Parsed again in another process, later, the start_date is the same instant."""
    probe = dag_file_probes[Path(dag.fileloc).name]
    assert probe["error"] is None, probe["error"]
    assert dag.dag_id in probe["start_dates"], f"the fresh import of {dag.fileloc} did not define {dag.dag_id}"
    again = datetime.fromisoformat(probe["start_dates"][dag.dag_id])
    assert again == dag.start_date, f"{dag.dag_id}: start_date {dag.start_date} on one parse, {again} on another"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda path: path.name)
def test_no_dates_computed_from_now(path):
    """Outside task bodies (which run at execution time), no `now()` / `today()` / `utcnow()` / `days_ago()`."""
    tree = _parse(path)
    in_tasks = {id(node) for function in _task_functions(tree) for node in ast.walk(function)}
    calls = [f"line {node.lineno}: {_dotted(node.func)}()" for node in ast.walk(tree)
             if isinstance(node, ast.Call) and id(node) not in in_tasks
             and _dotted(node.func).split(".")[-1] in NOW_CALLS]
    assert not calls, f"{path.name} computes dates at parse time: {calls}"


# --- structure --------------------------------------------------------------------------------------------------


def test_acyclic_and_topologically_sortable(dag):
    dag.check_cycle()  # raises AirflowDagCycleException
    order = [task.task_id for task in _flatten_topological(dag.task_group)]
    assert sorted(order) == sorted(dag.task_ids), f"{dag.dag_id}: sort {order} != tasks {sorted(dag.task_ids)}"
    position = {task_id: index for index, task_id in enumerate(order)}
    for task in dag.tasks:
        for upstream in task.upstream_task_ids:
            assert position[upstream] < position[task.task_id], f"{dag.dag_id}: {upstream} sorted after {task.task_id}"


def _flows() -> dict:
    """Every flow by the DAG that runs it (the nightly one publishing to files, as its DAG does)."""
    from pipeline.candidates.index import FLOW as INDEX
    from pipeline.features.daily import FLOW as FEATURES
    from pipeline.monitor.health import FLOW as MONITOR
    from pipeline.nightly.flow import nightly_flow
    from pipeline.publish.files import publish
    from pipeline.train.retrain import FLOW as RETRAIN

    return {flow.name: flow for flow in (FEATURES, RETRAIN, INDEX, nightly_flow(publish), MONITOR)}


def test_every_dag_runs_a_flow_and_every_flow_has_its_dag(dagbag):
    assert set(_flows()) == set(dagbag.dags) == EXPECTED_DAG_IDS


def test_dag_runs_its_flow_in_the_flow_order(dag):
    """The DAG's tasks are the flow's steps: same names in the same (topological) order, each task downstream of
    exactly the steps its step follows, mapped exactly where the step maps over a list."""
    flow = _flows().get(dag.dag_id)
    assert flow is not None, f"no flow in pipeline/ declares {dag.dag_id}"
    order = [task.task_id for task in _flatten_topological(dag.task_group)]
    assert order == list(flow.step_names), f"{dag.dag_id}: tasks in order {order}, flow steps {flow.step_names}"
    wiring = {task.task_id: set(task.upstream_task_ids) for task in dag.tasks}
    declared = {step.name: set(step.after) for step in flow.steps}
    assert wiring == declared, f"{dag.dag_id}: upstream tasks {wiring}, flow steps follow {declared}"
    mapped = {task.task_id for task in dag.tasks if task.is_mapped}
    assert mapped == {step.name for step in flow.steps if step.over}, f"{dag.dag_id}: mapped tasks {mapped}"


def test_nightly_gates_then_scores_shards_with_dynamic_task_mapping(dagbag):
    nightly = dagbag.dags.get("dailymix_nightly")
    assert nightly is not None, "dailymix_nightly is not in the DagBag"
    assert "score" in nightly.task_ids, f"no `score` task in dailymix_nightly: {nightly.task_ids}"
    score = nightly.get_task("score")
    assert score.is_mapped, f"`score` is a {type(score).__name__}, not a mapped task"
    assert score.upstream_task_ids == {"plan", "skew_gate"}, "`score` maps over the plan's shards, after the gate"
    assert nightly.get_task("skew_gate").upstream_task_ids == {"plan"}, "the gate checks the night `plan` pinned"


@pytest.mark.parametrize(("consumer_id", "producer_id"), ASSET_CHAIN, ids=[f"{c}<-{p}" for c, p in ASSET_CHAIN])
def test_asset_chaining(dagbag, consumer_id, producer_id):
    consumer, producer = dagbag.dags.get(consumer_id), dagbag.dags.get(producer_id)
    assert consumer is not None and producer is not None, f"{consumer_id} or {producer_id} is not in the DagBag"
    produced = _outlet_keys(producer.leaves)
    assert produced, (f"{producer_id}'s last task(s) {[task.task_id for task in producer.leaves]} emit no asset; "
                      f"outlets by task: { {task.task_id: task.outlets for task in producer.tasks} }")
    condition = getattr(consumer.timetable, "asset_condition", None)
    assert condition is not None, f"{consumer_id} is not asset-scheduled: {consumer.timetable!r}"
    scheduled = _asset_keys(condition)
    assert scheduled == produced, (
        f"{consumer_id} is scheduled on {sorted(scheduled)}; {producer_id}'s last task emits {sorted(produced)}")


# --- thin DAG files ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda path: path.name)
def test_dag_file_imports_nothing_heavy(path, dag_file_probes):
    probe = dag_file_probes[path.name]
    assert probe["error"] is None, f"{path.name} failed to import in a fresh interpreter:\n{probe['error']}"
    loaded = sorted(name for name in probe["modules"] if name.split(".")[0] in HEAVY_PACKAGES | DOMAIN_PACKAGES)
    roots = sorted({name.split(".")[0] for name in loaded})
    assert not loaded, f"importing {path.name} loads {roots}: {loaded[:20]}{' ...' if len(loaded) > 20 else ''}"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda path: path.name)
def test_dag_file_imports_fast(path, dag_file_probes):
    """The file's own import time, airflow's SDK already loaded (as in the dag processor); the cold total is reported.

    Airflow's own import (~3 s cold, more on a busy machine) is not the DAG file's cost, so it is left out of the bound.
    """
    probe = dag_file_probes[path.name]
    assert probe["error"] is None, probe["error"]
    assert probe["file_s"] < MAX_IMPORT_SECONDS, (
        f"{path.name}: {probe['file_s']:.2f} s to import (cold total with airflow.sdk: {probe['total_s']:.2f} s)")


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda path: path.name)
def test_dag_file_top_level_imports_are_light(path):
    """Statically: module-level imports in dags/ name no heavy library and no domain code (tasks import lazily)."""
    tree = _parse(path)
    top_level = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    offending = [f"line {line}: {module}" for node in top_level for line, module in _imported_modules(node)
                 if module.split(".")[0] in HEAVY_PACKAGES | DOMAIN_PACKAGES]
    assert not offending, f"{path.name} imports at module level: {offending}"


@pytest.mark.parametrize(("path", "function"), _task_function_ids(),
                         ids=[f"{path.stem}.{name}" for path, name in _task_function_ids()])
def test_task_is_a_thin_adapter(path, function):
    node = next(node for node in _task_functions(_parse(path)) if node.name == function)
    statements = _body_statements(node)
    assert statements <= MAX_TASK_STATEMENTS, (
        f"{path.name}:{node.lineno} @task {function} has {statements} statements (max {MAX_TASK_STATEMENTS}); "
        "move the logic into pipeline/ and call it")


def test_every_dag_file_wires_tasks(dagbag):
    """Guards the thin-adapter check against matching nothing: each DAG's tasks are @task functions found by ast."""
    found = {name for _, name in _task_function_ids()}
    missing = {dag_id: sorted(set(dag.task_ids) - found) for dag_id, dag in dagbag.dags.items()
               if set(dag.task_ids) - found}
    assert not missing, f"tasks not defined by an @task function in dags/ (unchecked by the adapter test): {missing}"


# --- domain code stays orchestrator-free ---------------------------------------------------------------------------


@pytest.mark.parametrize("package", ["pipeline", "validation"])
def test_domain_code_never_imports_airflow(package):
    files = sorted((PROJECT_ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    offending = [f"{path.relative_to(PROJECT_ROOT)}:{line}: {module}" for path in files
                 for line, module in _imported_modules(_parse(path)) if module.split(".")[0] == "airflow"]
    assert not offending, f"{package}/ imports airflow:\n" + "\n".join(offending)
