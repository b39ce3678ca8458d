"""rocpd SQLite (rocprofv3's default output since ROCm 7.0: rocpd_* tables)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from ... import schema
from ...trace import DeviceInfo, Trace
from .. import _coerce, nsys_sqlite as _sql
from ._common import (
    _finish,
    _frame,
    _grid_block,
    _int_array,
    _memcpy_name,
    _num,
    _short_names,
    _strings,
    _times,
    clean_kernel_names,
)


def _guid_join(a: str, b: str, cols_a: set[str], cols_b: set[str]) -> str:
    return f" AND {a}.guid = {b}.guid" if "guid" in cols_a and "guid" in cols_b else ""


def _parse_rocpd(con: sqlite3.Connection, tables: set[str], path: Path) -> Trace:
    warnings: list[str] = []
    cols = {t: _sql.columns(con, t) for t in tables if t.startswith("rocpd_")}
    devices, gpu_of = _rocpd_agents(con, cols)
    frames: list[pd.DataFrame | None] = []
    ev_cols = cols.get("rocpd_event", set())
    has_event = "stack_id" in ev_cols

    kd = cols.get("rocpd_kernel_dispatch")
    if kd:
        ks = cols.get("rocpd_info_kernel_symbol", set())
        name_expr = "COALESCE(ks.display_name, ks.kernel_name)" if ks else "NULL"
        sql = f"""
            SELECT k.start AS start, k."end" AS "end", {name_expr} AS name, k.agent_id AS agent,
                   k.stream_id AS stream, k.queue_id AS queue, k.pid AS pid, k.tid AS tid,
                   k.grid_size_x AS gx, k.grid_size_y AS gy, k.grid_size_z AS gz,
                   k.workgroup_size_x AS wx, k.workgroup_size_y AS wy, k.workgroup_size_z AS wz,
                   {'e.stack_id' if has_event else 'NULL'} AS corr
            FROM rocpd_kernel_dispatch k
            {'LEFT JOIN rocpd_info_kernel_symbol ks ON ks.id = k.kernel_id'
             + _guid_join('ks', 'k', ks, kd) if ks else ''}
            {'LEFT JOIN rocpd_event e ON e.id = k.event_id'
             + _guid_join('e', 'k', ev_cols, kd) if has_event else ''}"""
        df = _coerce.decode_blobs(pd.read_sql_query(sql, con))
        if len(df):
            name = clean_kernel_names(df["name"])
            start, dur, _ = _times(df["start"], df["end"])
            grid, block = _grid_block(df["gx"], df["gy"], df["gz"], _num(df, "wx"),
                                      _num(df, "wy"), _num(df, "wz"))
            frames.append(_frame(
                schema.KIND_KERNEL, len(df), name=_strings(name),
                short_name=_short_names(name), start_ns=start, dur_ns=dur,
                device=_int_array(df["agent"].map(gpu_of)),
                stream=_int_array(df["stream"].fillna(df["queue"])),
                pid=_int_array(df["pid"]), tid=_int_array(df["tid"]),
                correlation=_int_array(df["corr"]), grid=grid, block=block))
    else:
        warnings.append("no rocpd_kernel_dispatch table: no kernels in this database")

    mc = cols.get("rocpd_memory_copy")
    if mc:
        sql = f"""
            SELECT m.start AS start, m."end" AS "end", s.string AS dir, m.size AS bytes,
                   m.src_agent_id AS src, m.dst_agent_id AS dst, m.stream_id AS stream,
                   m.pid AS pid, m.tid AS tid, {'e.stack_id' if has_event else 'NULL'} AS corr
            FROM rocpd_memory_copy m
            LEFT JOIN rocpd_string s ON s.id = m.name_id{_guid_join('s', 'm', cols.get('rocpd_string', set()), mc)}
            {'LEFT JOIN rocpd_event e ON e.id = m.event_id'
             + _guid_join('e', 'm', ev_cols, mc) if has_event else ''}"""
        df = _coerce.decode_blobs(pd.read_sql_query(sql, con))
        if len(df):
            start, dur, _ = _times(df["start"], df["end"])
            dev = df["dst"].map(gpu_of).fillna(df["src"].map(gpu_of))
            frames.append(_frame(
                schema.KIND_MEMCPY, len(df), name=_strings(_memcpy_name(df["dir"])),
                start_ns=start, dur_ns=dur, device=_int_array(dev),
                stream=_int_array(df["stream"]), pid=_int_array(df["pid"]),
                tid=_int_array(df["tid"]), correlation=_int_array(df["corr"]),
                bytes=_int_array(df["bytes"])))

    rg = cols.get("rocpd_region")
    if rg:
        cat = "c.string" if has_event and "category_id" in ev_cols else "NULL"
        sql = f"""
            SELECT r.start AS start, r."end" AS "end", s.string AS name, r.pid AS pid,
                   r.tid AS tid, {'e.stack_id' if has_event else 'NULL'} AS corr,
                   {cat} AS category
            FROM rocpd_region r
            LEFT JOIN rocpd_string s ON s.id = r.name_id{_guid_join('s', 'r', cols.get('rocpd_string', set()), rg)}
            {'LEFT JOIN rocpd_event e ON e.id = r.event_id'
             + _guid_join('e', 'r', ev_cols, rg) if has_event else ''}
            {'LEFT JOIN rocpd_string c ON c.id = e.category_id' if cat != 'NULL' else ''}"""
        df = _coerce.decode_blobs(pd.read_sql_query(sql, con))
        if len(df):
            category = df["category"].fillna("").astype(str)
            marker = category.str.startswith("MARKER")
            for kind, sel in ((schema.KIND_RUNTIME, ~marker), (schema.KIND_ANNOTATION, marker)):
                sub = df[sel]
                if kind == schema.KIND_ANNOTATION:
                    sub = sub[pd.to_numeric(sub["end"]) > pd.to_numeric(sub["start"])]
                if not len(sub):
                    continue
                start, dur, _ = _times(sub["start"], sub["end"])
                frames.append(_frame(
                    kind, len(sub), name=_strings(sub["name"]),
                    start_ns=start, dur_ns=dur, pid=_int_array(sub["pid"]),
                    tid=_int_array(sub["tid"]),
                    correlation=_int_array(sub["corr"]) if kind == schema.KIND_RUNTIME else None))
    options: dict[str, Any] = {}
    if "rocpd_metadata" in cols:
        meta = dict(con.execute("SELECT tag, value FROM rocpd_metadata").fetchall())
        if "schema_version" in meta:
            options["rocpd_schema_version"] = str(meta["schema_version"])
    return _finish(frames, "rocpd", path, devices, warnings, options)


def _rocpd_agents(con: sqlite3.Connection,
                  cols: dict[str, set[str]]) -> tuple[list[DeviceInfo], dict[Any, int]]:
    ac = cols.get("rocpd_info_agent")
    if not ac or "type" not in ac:
        return [], {}
    fields = ["id", "type", "type_index", "name", "product_name", "extdata"]
    sel = ", ".join(f if f in ac else f"NULL AS {f}" for f in fields)
    rows = con.execute(f"SELECT {sel} FROM rocpd_info_agent ORDER BY id").fetchall()
    devices: list[DeviceInfo] = []
    gpu_of: dict[Any, int] = {}
    for aid, typ, tidx, name, product, ext in rows:
        if str(typ).upper() != "GPU":
            continue
        ordinal = int(tidx) if tidx is not None else len(gpu_of)
        gpu_of[aid] = ordinal
        cu = None
        try:
            cu = orjson.loads(ext or "{}").get("cu_count")
        except (orjson.JSONDecodeError, AttributeError):
            pass
        if not any(d.index == ordinal for d in devices):
            devices.append(DeviceInfo(index=ordinal, name=str(product or name or ""),
                                      sm_count=int(cu) if isinstance(cu, int) else None,
                                      compute_capability=str(name) if name else None,
                                      vendor="amd"))
    devices.sort(key=lambda d: d.index)
    return devices, gpu_of
