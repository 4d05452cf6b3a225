// The dialplan call widget: pick a bot, fill its variables, call it from the browser.
//
// Speaks the generic WebSocket protocol of /ws (runtime/transports/generic.py): a JSON
// `start`, then 20 ms binary frames of 16-bit little-endian mono PCM both ways; the
// server's `mark`s are echoed once their audio has played here, `clear` drops whatever
// bot audio is still scheduled. A bot with a flow also sends its graph (`flow`), drawn
// here as SVG with the current step highlighted as `step_entered` events arrive. No build
// step and nothing fetched from elsewhere.
"use strict";

(() => {
  const SAMPLE_RATE = 16000; // what we ask the AudioContext for and send on the wire
  const FRAME_SAMPLES = SAMPLE_RATE / 50; // 20 ms: 320 samples, 640 bytes
  const PLAYOUT_LEAD = 0.05; // seconds of jitter buffer when bot audio (re)starts
  const MAX_BUFFERED_BYTES = 64 * 1024; // a stalled socket drops mic audio beyond ~2 s
  const HANGUP_WAIT_MS = 5000; // after `stop`, how long the server has to say `ended`
  const WORKLET_URL = "/widget/capture-worklet.js";

  const el = {
    form: document.getElementById("call-form"),
    bot: document.getElementById("bot"),
    botInfo: document.getElementById("bot-info"),
    variables: document.getElementById("variables"),
    call: document.getElementById("call"),
    hangup: document.getElementById("hangup"),
    ignoreScheduleField: document.getElementById("ignore-schedule-field"),
    ignoreSchedule: document.getElementById("ignore-schedule"),
    sayForm: document.getElementById("say-form"),
    say: document.getElementById("say"),
    saySend: document.getElementById("say-send"),
    status: document.getElementById("status"),
    errors: document.getElementById("errors"),
    transcript: document.getElementById("transcript"),
    timeline: document.getElementById("timeline"),
    main: document.querySelector("main"),
    flowPanel: document.getElementById("flow-panel"),
    flowGraph: document.getElementById("flow-graph"),
    flowCurrent: document.getElementById("flow-current"),
    flowLast: document.getElementById("flow-last"),
    captured: document.getElementById("captured"),
  };

  let bots = [];
  let current = null; // the Call in progress, if any

  // -- page state --------------------------------------------------------------------

  function setStatus(state, text) {
    el.status.dataset.state = state;
    el.status.textContent = text;
  }

  function showError(message) {
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = message;
    el.errors.append(p);
  }

  function updateControls() {
    const busy = current !== null;
    el.call.disabled = busy || bots.length === 0;
    el.hangup.disabled = !busy;
    el.say.disabled = el.saySend.disabled = !busy;
    el.bot.disabled = busy || bots.length === 0;
    for (const input of el.variables.querySelectorAll("input")) input.disabled = busy;
  }

  function scrollToEnd(list) {
    list.scrollTop = list.scrollHeight;
  }

  // -- bots and their variables ------------------------------------------------------

  async function loadBots() {
    let data;
    try {
      const response = await fetch("/api/bots", { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      data = await response.json();
    } catch (err) {
      el.bot.replaceChildren(new Option("No bots", ""));
      showError(`Could not load the bots (GET /api/bots): ${err.message}`);
      setStatus("failed", "No bots to call");
      return;
    }
    bots = Array.isArray(data.bots) ? data.bots : [];
    el.ignoreScheduleField.hidden = data.schedule_override !== true;
    el.bot.replaceChildren();
    for (const bot of bots) {
      const option = new Option(bot.id, bot.id);
      if (bot.description) option.title = bot.description;
      el.bot.append(option);
    }
    if (bots.length === 0) {
      el.bot.append(new Option("No bots", ""));
      setStatus("failed", "The server offers no bots");
    } else {
      const wanted = new URLSearchParams(location.search).get("bot") || data.default;
      if (wanted && bots.some((b) => b.id === wanted)) el.bot.value = wanted;
      setStatus("idle", "Ready");
    }
    showBot();
    updateControls();
  }

  function selectedBot() {
    return bots.find((b) => b.id === el.bot.value) || null;
  }

  function showBot() {
    const bot = selectedBot();
    el.botInfo.replaceChildren();
    if (bot) {
      const description = document.createElement("span");
      description.className = "description";
      description.textContent = bot.description || "(no description)";
      const version = document.createElement("span");
      version.className = "version";
      version.dataset.testid = "bot-version";
      version.textContent = ` · version ${bot.version}`;
      el.botInfo.append(description, version);
    }
    renderVariables(bot);
  }

  function renderVariables(bot) {
    const legend = document.createElement("legend");
    legend.textContent = "Variables";
    el.variables.replaceChildren(legend);
    const entries = bot ? Object.entries(bot.variables || {}) : [];
    if (entries.length === 0) {
      const hint = document.createElement("p");
      hint.className = "hint";
      hint.textContent = bot ? "This bot takes no variables." : "Pick a bot first.";
      el.variables.append(hint);
      return;
    }
    for (const [name, spec] of entries) {
      const field = document.createElement("div");
      field.className = "field";
      const id = `var-${name}`;
      const label = document.createElement("label");
      label.htmlFor = id;
      label.textContent = name;
      const input = document.createElement("input");
      input.type = "text";
      input.id = id;
      input.name = name;
      input.dataset.var = name;
      input.autocomplete = "off";
      const fallback = spec.default;
      if (fallback !== null && fallback !== undefined) {
        input.value = typeof fallback === "string" ? fallback : JSON.stringify(fallback);
        if (typeof fallback !== "string") input.dataset.json = "true";
      }
      if (spec.required) {
        const mark = document.createElement("span");
        mark.className = "required-mark";
        mark.textContent = " (required)";
        label.append(mark);
        input.setAttribute("aria-required", "true");
        input.placeholder = "required";
      }
      field.append(label, input);
      if (spec.description) {
        const about = document.createElement("p");
        about.className = "hint";
        about.id = `${id}-about`;
        about.textContent = spec.description;
        input.setAttribute("aria-describedby", about.id);
        field.append(about);
      }
      el.variables.append(field);
    }
    const hint = document.createElement("p");
    hint.className = "hint";
    hint.textContent = "Empty fields are left to the bot's defaults.";
    el.variables.append(hint);
  }

  function collectVariables() {
    const variables = {};
    for (const input of el.variables.querySelectorAll("input[data-var]")) {
      const value = input.value.trim();
      if (value === "") continue; // the bot's default applies (a required one is refused)
      let parsed = value;
      if (input.dataset.json) {
        try {
          const decoded = JSON.parse(value);
          if (decoded === null || ["number", "boolean", "string"].includes(typeof decoded)) {
            parsed = decoded;
          }
        } catch {
          // not JSON after all: send the text
        }
      }
      variables[input.dataset.var] = parsed;
    }
    return variables;
  }

  // -- transcript and timeline ---------------------------------------------------------

  function addTranscript(entry) {
    const li = document.createElement("li");
    const role = entry.role === "customer" ? "customer" : "bot";
    li.className = role;
    li.dataset.role = role;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "customer" ? "You:" : "Bot:";
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = entry.text;
    li.append(who, text);
    if (entry.interrupted) {
      li.classList.add("interrupted");
      li.dataset.interrupted = "true";
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = "(interrupted)";
      li.append(tag);
    }
    el.transcript.append(li);
    scrollToEnd(el.transcript);
  }

  function ms(seconds) {
    return `${Math.round(seconds * 1000)} ms`;
  }

  function compact(data) {
    return Object.entries(data)
      .filter(([, v]) => v !== null && v !== undefined && v !== "")
      .map(([k, v]) => {
        let text = typeof v === "object" ? JSON.stringify(v) : String(v);
        if (text.length > 80) text = `${text.slice(0, 77)}...`;
        return `${k}=${text}`;
      })
      .join(", ");
  }

  function describeEvent(event) {
    const d = event.data || {};
    switch (event.type) {
      case "tool_call": {
        let text = `${d.name} → ${d.outcome}`;
        if (typeof d.latency_ms === "number") text += ` in ${d.latency_ms.toFixed(1)} ms`;
        if (d.error) text += ` — ${d.error}`;
        return text;
      }
      case "turn": {
        const parts = [`${d.role}, ${d.chars} chars`];
        for (const [k, v] of Object.entries(d)) {
          if (k !== "role" && k !== "chars" && typeof v === "number") parts.push(`${k} ${ms(v)}`);
        }
        return parts.join(" · ");
      }
      case "error":
        return d.source ? `${d.source}: ${d.error}` : String(d.error ?? compact(d));
      case "bot_audio":
        return `first bot audio ${d.latency_ms} ms after the caller stopped`;
      case "transport_error":
        return String(d.error);
      case "end_requested":
        return `by ${d.disconnected_by}${d.cause ? `: ${d.cause}` : ""}`;
      case "stream_started":
        return `${d.transport}, ${d.sample_rate} Hz`;
      case "call_started":
        return `version ${d.bot_version}`;
      case "step_entered":
        return d.from ? `${d.from} → ${d.step} (${d.reason})` : `${d.step} (${d.reason})`;
      case "captured":
        return `${compact(d.values || {})} · by ${d.by}`;
      default:
        return compact(d);
    }
  }

  function addEvent(event) {
    const li = document.createElement("li");
    li.className = event.type;
    li.dataset.type = event.type;
    if (event.data && event.data.outcome && event.data.outcome !== "ok") li.classList.add("failed");
    const at = document.createElement("span");
    at.className = "at";
    at.textContent = typeof event.at === "number" ? `${event.at.toFixed(2)} s` : "";
    const type = document.createElement("span");
    type.className = "type";
    type.textContent = event.type;
    const detail = document.createElement("span");
    detail.className = "detail";
    detail.textContent = describeEvent(event);
    li.append(at, type, detail);
    el.timeline.append(li);
    scrollToEnd(el.timeline);
  }

  // -- the flow graph ----------------------------------------------------------------
  //
  // The `flow` message carries the graph (runtime/flow/graph.py `graph_json`): nodes
  // (steps by name, terminal tools as `tool:<name>`) and edges keyed like the
  // `transition` of a `step_entered` event. Layout: rows by BFS distance from the start
  // step, each row ordered by where its parents sit; edges that go down are curves,
  // edges back up or within a row loop around the side.

  const SVG_NS = "http://www.w3.org/2000/svg";
  const NODE_W = 148;
  const NODE_H = 44;
  const GAP_X = 20;
  const GAP_Y = 50;
  const PAD = 24; // room for edges looping round the side

  const flow = {
    graph: null,
    current: null, // the step the call is in
    path: [], // the steps entered, in order
    taken: null, // the key of the transition taken last
    captured: {},
    fresh: new Set(), // captured names that changed last
  };

  function resetFlow() {
    flow.graph = null;
    flow.current = null;
    flow.path = [];
    flow.taken = null;
    flow.captured = {};
    flow.fresh = new Set();
    el.flowPanel.hidden = true;
    el.main.classList.remove("has-flow");
    el.flowGraph.replaceChildren();
    el.captured.replaceChildren();
    el.flowCurrent.textContent = "";
    el.flowLast.textContent = "";
    delete el.flowGraph.dataset.current;
    delete el.flowGraph.dataset.path;
  }

  function showFlow(message) {
    const graph = message.graph;
    if (!graph || !Array.isArray(graph.nodes) || graph.nodes.length === 0) return;
    flow.graph = graph;
    el.flowPanel.hidden = false;
    el.main.classList.add("has-flow");
    drawGraph(graph);
    if (message.step && flow.path.length === 0) enterStep(message.step, null);
    // values captured at the start (defaults); anything a live event set already is newer
    const initial = Object.entries(message.captured || {}).filter(([name]) => !(name in flow.captured));
    setCaptured(Object.fromEntries(initial), false);
    highlight();
  }

  function flowEvent(event) {
    const d = event.data || {};
    if (event.type === "step_entered" && d.step) {
      enterStep(d.step, d);
      highlight();
    } else if (event.type === "captured" && d.values) {
      setCaptured(d.values, true);
    }
  }

  function enterStep(step, data) {
    flow.current = step;
    if (flow.path[flow.path.length - 1] !== step) flow.path.push(step);
    flow.taken = data && data.transition ? data.transition : null;
    if (data && data.from) {
      const latency = typeof data.latency_ms === "number" ? ` in ${data.latency_ms.toFixed(1)} ms` : "";
      el.flowLast.textContent = `${data.from} → ${step}: ${data.reason}${latency}`;
    }
  }

  function svg(tag, attributes = {}, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function clip(text, chars) {
    return text.length > chars ? `${text.slice(0, chars - 1)}…` : text;
  }

  function layout(graph) {
    const ids = graph.nodes.map((n) => n.id);
    const next = new Map(ids.map((id) => [id, []]));
    const parents = new Map(ids.map((id) => [id, []]));
    for (const edge of graph.edges) {
      if (!next.has(edge.from) || !next.has(edge.to) || edge.from === edge.to) continue;
      next.get(edge.from).push(edge.to);
      parents.get(edge.to).push(edge.from);
    }
    const level = new Map();
    const order = [];
    const queue = [];
    if (next.has(graph.start)) {
      level.set(graph.start, 0);
      queue.push(graph.start);
    }
    while (queue.length) {
      const id = queue.shift();
      order.push(id);
      for (const to of next.get(id)) {
        if (!level.has(to)) {
          level.set(to, level.get(id) + 1);
          queue.push(to);
        }
      }
    }
    let deepest = Math.max(-1, ...level.values());
    for (const id of ids) {
      if (!level.has(id)) {
        level.set(id, ++deepest); // unreachable (the compiler refuses those): below the rest
        order.push(id);
      }
    }
    const rows = [];
    for (const id of order) (rows[level.get(id)] ||= []).push(id);
    const column = new Map();
    rows.forEach((row, r) => {
      if (r > 0) {
        // order a row by the mean column of its parents in the rows above: fewer crossings
        const weight = (id) => {
          const above = parents.get(id).filter((p) => level.get(p) < r && column.has(p));
          return above.length ? above.reduce((sum, p) => sum + column.get(p), 0) / above.length : 1e9;
        };
        const weights = new Map(row.map((id) => [id, weight(id)]));
        row.sort((a, b) => weights.get(a) - weights.get(b));
      }
      const offset = -(row.length - 1) / 2;
      row.forEach((id, i) => column.set(id, offset + i));
    });
    const widest = Math.max(...rows.map((row) => row.length));
    const width = widest * NODE_W + (widest - 1) * GAP_X + 2 * PAD;
    const height = rows.length * NODE_H + (rows.length - 1) * GAP_Y + 2 * PAD;
    const place = new Map();
    for (const id of ids) {
      const x = width / 2 + column.get(id) * (NODE_W + GAP_X) - NODE_W / 2;
      const y = PAD + level.get(id) * (NODE_H + GAP_Y);
      place.set(id, { x, y, level: level.get(id) });
    }
    return { place, width, height };
  }

  function edgePath(a, b, lane, width) {
    const ax = a.x + NODE_W / 2;
    const bx = b.x + NODE_W / 2;
    if (a === b) {
      // a step back into itself: a small loop on its right
      const x = a.x + NODE_W;
      const y = a.y + NODE_H / 2;
      return `M ${x} ${y - 8} C ${x + 28} ${y - 22}, ${x + 28} ${y + 22}, ${x} ${y + 8}`;
    }
    if (b.level > a.level) {
      const shift = lane * 10;
      const y1 = a.y + NODE_H;
      const y2 = b.y;
      const bend = (y2 - y1) / 2;
      return `M ${ax + shift} ${y1} C ${ax + shift} ${y1 + bend}, ${bx + shift} ${y2 - bend}, ${bx + shift} ${y2}`;
    }
    if (b.level === a.level) {
      // within a row: an arc over the nodes between
      const right = bx > ax;
      const x1 = right ? a.x + NODE_W : a.x;
      const x2 = right ? b.x : b.x + NODE_W;
      const y = a.y + NODE_H / 2 + lane * 6;
      const lift = Math.abs(bx - ax) > NODE_W + GAP_X ? NODE_H : 0;
      return `M ${x1} ${y} C ${x1} ${y - lift}, ${x2} ${y - lift}, ${x2} ${y}`;
    }
    // back up: round the outer side of the graph
    const rightSide = ax + bx >= width;
    const x1 = rightSide ? a.x + NODE_W : a.x;
    const x2 = rightSide ? b.x + NODE_W : b.x;
    const out = (rightSide ? 1 : -1) * (PAD - 4 + lane * 6);
    const edge = rightSide ? Math.max(x1, x2) : Math.min(x1, x2);
    const y1 = a.y + NODE_H / 2;
    const y2 = b.y + NODE_H / 2;
    return `M ${x1} ${y1} C ${edge + out} ${y1}, ${edge + out} ${y2}, ${x2} ${y2}`;
  }

  function drawGraph(graph) {
    const { place, width, height } = layout(graph);
    const root = svg("svg", {
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": `Flow of ${graph.nodes.filter((n) => n.kind === "step").length} steps, starting at ${graph.start}`,
    });
    root.style.maxWidth = `${width}px`;
    const defs = svg("defs");
    for (const [id, cls] of [["flow-arrow", "arrow"], ["flow-arrow-taken", "arrow taken"]]) {
      const marker = svg("marker", {
        id,
        viewBox: "0 0 10 10",
        refX: 9,
        refY: 5,
        markerUnits: "userSpaceOnUse", // one size, however thick the edge
        markerWidth: 9,
        markerHeight: 9,
        orient: "auto-start-reverse",
      });
      marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: cls }));
      defs.append(marker);
    }
    root.append(defs);
    const edges = svg("g", { class: "flow-edges" });
    const lanes = new Map(); // how many edges already join this pair of nodes
    for (const edge of graph.edges) {
      const a = place.get(edge.from);
      const b = place.get(edge.to);
      if (!a || !b) continue;
      const pair = `${edge.from}\u0000${edge.to}`;
      const lane = lanes.get(pair) || 0;
      lanes.set(pair, lane + 1);
      const group = svg("g", { class: "flow-edge" });
      group.dataset.key = edge.key;
      group.dataset.kind = edge.kind;
      group.dataset.from = edge.from;
      group.dataset.to = edge.to;
      const target = graph.nodes.find((n) => n.id === edge.to);
      const text = edge.text || edge.label || edge.kind;
      group.append(svg("title", {}, `${edge.from} → ${target ? target.label : edge.to}: ${text}`));
      group.append(svg("path", { d: edgePath(a, b, lane, width), "marker-end": "url(#flow-arrow)" }));
      edges.append(group);
    }
    root.append(edges);
    const nodes = svg("g", { class: "flow-nodes" });
    for (const node of graph.nodes) {
      const at = place.get(node.id);
      const group = svg("g", { class: `flow-node ${node.kind}`, transform: `translate(${at.x} ${at.y})` });
      group.dataset.node = node.id;
      if (node.kind === "step") group.dataset.step = node.id;
      if (node.start) group.classList.add("start");
      const hints = Array.isArray(node.hints) ? node.hints : [];
      const title = [node.start ? `${node.label} (start)` : node.label, ...hints].join("\n");
      group.append(svg("title", {}, title));
      const round = node.kind === "tool" ? NODE_H / 2 : node.speaks_only ? 14 : 5;
      group.append(svg("rect", { width: NODE_W, height: NODE_H, rx: round, ry: round }));
      const name = node.start ? `▶ ${node.label}` : node.label;
      if (hints.length && node.kind === "step") {
        group.append(svg("text", { class: "name", x: NODE_W / 2, y: 18 }, clip(name, 21)));
        group.append(svg("text", { class: "hint", x: NODE_W / 2, y: 34 }, clip(hints[0], 25)));
      } else {
        group.append(svg("text", { class: "name", x: NODE_W / 2, y: NODE_H / 2 + 4 }, clip(name, 21)));
      }
      nodes.append(group);
    }
    root.append(nodes);
    el.flowGraph.replaceChildren(root);
  }

  function highlight() {
    const visited = new Set(flow.path);
    for (const node of el.flowGraph.querySelectorAll(".flow-node")) {
      const id = node.dataset.node;
      const current = id === flow.current;
      node.classList.toggle("current", current);
      node.classList.toggle("visited", visited.has(id) && !current);
      if (current) node.setAttribute("aria-current", "step");
      else node.removeAttribute("aria-current");
      node.dataset.current = String(current);
    }
    for (const edge of el.flowGraph.querySelectorAll(".flow-edge")) {
      const taken = edge.dataset.key === flow.taken;
      edge.classList.toggle("taken", taken);
      edge.querySelector("path").setAttribute("marker-end", `url(#${taken ? "flow-arrow-taken" : "flow-arrow"})`);
    }
    if (flow.current) {
      el.flowGraph.dataset.current = flow.current;
      el.flowGraph.dataset.path = flow.path.join(" ");
      el.flowCurrent.textContent = `Current step: ${flow.current}`;
    }
  }

  function setCaptured(values, fresh) {
    if (fresh) flow.fresh = new Set(Object.keys(values));
    Object.assign(flow.captured, values);
    const rows = [];
    for (const [name, value] of Object.entries(flow.captured)) {
      const row = document.createElement("div");
      row.dataset.name = name;
      if (flow.fresh.has(name)) row.className = "fresh";
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = typeof value === "string" ? value : JSON.stringify(value);
      row.append(dt, dd);
      rows.push(row);
    }
    el.captured.replaceChildren(...rows);
  }

  // -- one call ----------------------------------------------------------------------

  class Call {
    constructor(bot, variables) {
      this.bot = bot;
      this.variables = variables;
      this.rate = SAMPLE_RATE;
      this.ws = null;
      this.ctx = null;
      this.stream = null;
      this.source = null;
      this.capture = null;
      this.started = null; // the server's `started` message
      this.ended = null; // the server's `ended` message
      this.lastError = null;
      this.hangingUp = false;
      this.finished = false;
      this.playhead = 0; // AudioContext time at which all scheduled bot audio has played
      this.sources = new Set();
      this.markTimers = new Set();
      this.closeTimer = null;
    }

    async start() {
      setStatus("connecting", "Connecting… (asking for the microphone)");
      try {
        if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
          throw new Error("this page cannot use the microphone (it needs https or localhost)");
        }
        this.stream = await navigator.mediaDevices.getUserMedia({
          audio: { echoCancellation: true, noiseSuppression: true },
        });
      } catch (err) {
        // no microphone (or none allowed): the call goes on, typed instead of spoken
        this.stream = null;
        const why = err && err.name === "NotAllowedError" ? "microphone access was denied" : err.message;
        showError(`No microphone (${why}): type to the bot instead.`);
      }
      if (this.finished) return this.teardown();
      await this.openAudio();
      if (this.finished) return this.teardown();
      setStatus("connecting", "Connecting…");
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const ws = (this.ws = new WebSocket(`${scheme}://${location.host}/ws`));
      ws.binaryType = "arraybuffer";
      ws.onopen = () =>
        this.send({
          type: "start",
          bot: this.bot,
          variables: this.variables,
          sample_rate: this.rate,
          marks: true,
          ...(el.ignoreSchedule.checked ? { ignore_schedule: true } : {}),
        });
      ws.onmessage = (event) => this.receive(event.data);
      ws.onclose = (event) => this.closed(event);
      ws.onerror = () => {}; // `close` follows with the code and reason
    }

    async openAudio() {
      // Ask for the wire's rate; a browser that cannot capture at it gets its own rate
      // and the worklet resamples (playback buffers at 16 kHz are resampled anyway).
      let ctx;
      if (!this.stream) {  // typing only: the bot is still heard
        this.ctx = new AudioContext({ latencyHint: "interactive" });
        if (this.ctx.state !== "running") await this.ctx.resume().catch(() => {});
        return;
      }
      try {
        ctx = new AudioContext({ sampleRate: SAMPLE_RATE, latencyHint: "interactive" });
        this.source = ctx.createMediaStreamSource(this.stream);
      } catch {
        if (ctx) ctx.close().catch(() => {});
        ctx = new AudioContext({ latencyHint: "interactive" });
        this.source = ctx.createMediaStreamSource(this.stream);
      }
      this.ctx = ctx;
      await ctx.audioWorklet.addModule(WORKLET_URL);
      this.capture = new AudioWorkletNode(ctx, "capture", {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        outputChannelCount: [1],
        processorOptions: { targetRate: this.rate, frameSamples: FRAME_SAMPLES },
      });
      this.capture.port.onmessage = (event) => this.captured(event.data);
      this.source.connect(this.capture);
      this.capture.connect(ctx.destination); // its output is silence; this keeps it pulled
      if (ctx.state !== "running") await ctx.resume();
    }

    send(message) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
    }

    captured(block) {
      const ws = this.ws;
      if (!this.started || this.hangingUp || !ws || ws.readyState !== WebSocket.OPEN) return;
      if (ws.bufferedAmount > MAX_BUFFERED_BYTES) return;
      const pcm = new Int16Array(block.length);
      for (let i = 0; i < block.length; i++) {
        const s = Math.max(-1, Math.min(1, block[i]));
        pcm[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
      }
      ws.send(pcm.buffer);
    }

    receive(data) {
      if (data instanceof ArrayBuffer) {
        this.play(data);
        return;
      }
      let message;
      try {
        message = JSON.parse(data);
      } catch {
        showError(`The server sent something that is not JSON: ${String(data).slice(0, 80)}`);
        return;
      }
      switch (message.type) {
        case "started":
          this.started = message;
          setStatus(
            "in-call",
            `In call · session ${message.session_id} · ${message.bot} version ${message.bot_version}`,
          );
          el.status.dataset.session = message.session_id;
          break;
        case "transcript":
          addTranscript(message);
          break;
        case "flow":
          showFlow(message);
          break;
        case "event":
          if (message.event) {
            addEvent(message.event);
            flowEvent(message.event);
          }
          break;
        case "mark":
          this.echoMarkWhenPlayed(message.name);
          break;
        case "clear":
          this.clearPlayback();
          break;
        case "ended":
          this.ended = message;
          setStatus(
            "ended",
            `Ended · disconnected by ${message.disconnected_by}` +
              (message.cause ? `: ${message.cause}` : ""),
          );
          break;
        case "error":
          this.lastError = message.message;
          showError(message.message);
          break;
        default:
          break; // a newer server's message: ignore it
      }
    }

    // -- the bot's audio -----------------------------------------------------------

    play(buffer) {
      const ctx = this.ctx;
      if (!ctx || ctx.state === "closed" || buffer.byteLength < 2) return;
      const pcm = new Int16Array(buffer, 0, buffer.byteLength >> 1);
      const audio = ctx.createBuffer(1, pcm.length, this.rate);
      const channel = audio.getChannelData(0);
      for (let i = 0; i < pcm.length; i++) channel[i] = pcm[i] / 0x8000;
      const node = ctx.createBufferSource();
      node.buffer = audio;
      node.connect(ctx.destination);
      const now = ctx.currentTime;
      if (this.playhead < now) this.playhead = now + PLAYOUT_LEAD; // ran dry: restart
      node.start(this.playhead);
      this.playhead += audio.duration;
      this.sources.add(node);
      node.onended = () => this.sources.delete(node);
    }

    echoMarkWhenPlayed(name) {
      const ctx = this.ctx;
      const remaining = ctx ? Math.max(0, this.playhead - ctx.currentTime) : 0;
      const timer = setTimeout(() => {
        this.markTimers.delete(timer);
        this.send({ type: "mark", name });
      }, remaining * 1000);
      this.markTimers.add(timer);
    }

    clearPlayback() {
      for (const node of this.sources) {
        try {
          node.stop();
        } catch {
          // never started or already stopped
        }
      }
      this.sources.clear();
      for (const timer of this.markTimers) clearTimeout(timer);
      this.markTimers.clear(); // the server counted those segments as interrupted
      this.playhead = this.ctx ? this.ctx.currentTime : 0;
    }

    // -- the end -------------------------------------------------------------------

    hangUp() {
      if (this.hangingUp || this.finished) return;
      this.hangingUp = true;
      setStatus("ending", "Hanging up…");
      this.stopAudio();
      const ws = this.ws;
      if (ws && ws.readyState === WebSocket.OPEN) {
        this.send({ type: "stop" });
        // the server answers with `ended` and closes; don't wait on it forever
        this.closeTimer = setTimeout(() => ws.close(1000, "hung up"), HANGUP_WAIT_MS);
      } else if (ws && ws.readyState === WebSocket.CONNECTING) {
        ws.close(1000, "hung up");
      } else if (!ws) {
        this.finish(); // still setting up: start() tears down when it notices
        setStatus("ended", "Hung up before the call connected");
      }
    }

    closed(event) {
      clearTimeout(this.closeTimer);
      if (this.ended) {
        // the status already says why
      } else if (!this.started) {
        const reason = this.lastError || event.reason || `the connection closed (code ${event.code})`;
        setStatus(this.hangingUp ? "ended" : "failed", `Call failed: ${reason}`);
      } else {
        const reason = event.reason ? `: ${event.reason}` : "";
        setStatus("ended", `Ended · the connection closed (code ${event.code}${reason})`);
      }
      this.finish();
    }

    stopAudio() {
      this.clearPlayback();
      if (this.capture) {
        this.capture.port.postMessage({ type: "stop" });
        this.capture.port.onmessage = null;
        this.capture.disconnect();
        this.capture = null;
      }
      if (this.source) {
        this.source.disconnect();
        this.source = null;
      }
      if (this.stream) {
        for (const track of this.stream.getTracks()) track.stop();
        this.stream = null;
      }
      if (this.ctx && this.ctx.state !== "closed") this.ctx.close().catch(() => {});
    }

    teardown() {
      this.stopAudio();
      this.ctx = null;
    }

    finish() {
      if (this.finished) return;
      this.finished = true;
      this.teardown();
      if (current === this) current = null;
      updateControls();
      el.call.focus();
    }
  }

  // -- wiring --------------------------------------------------------------------------

  async function startCall(event) {
    event.preventDefault();
    if (current) return;
    const bot = selectedBot();
    if (!bot) return;
    el.errors.replaceChildren();
    el.transcript.replaceChildren();
    el.timeline.replaceChildren();
    resetFlow();
    delete el.status.dataset.session;
    const call = (current = new Call(bot.id, collectVariables()));
    updateControls();
    el.hangup.focus();
    try {
      await call.start();
    } catch (err) {
      if (call.finished) return; // hung up while setting up
      const message = err && err.name === "NotAllowedError" ? "microphone access was denied" : err.message;
      showError(`Could not start the call: ${message}`);
      setStatus("failed", `Call failed: ${message}`);
      call.finish();
    }
  }

  el.form.addEventListener("submit", startCall);
  el.sayForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = el.say.value.trim();
    if (!current || !text) return;
    current.send({ type: "say", text });
    el.say.value = "";
  });
  el.hangup.addEventListener("click", () => current && current.hangUp());
  el.bot.addEventListener("change", showBot);
  window.addEventListener("pagehide", () => current && current.hangUp());

  loadBots();
})();
