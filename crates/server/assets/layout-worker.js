// Lays graphs out off the page's main thread: a workflow of thousands of tasks takes seconds
// to lay out, and the page stays responsive (and keeps applying live updates) meanwhile.
// In: {id, graph} (see layout.js); out: {id, result} or {id, error}.
'use strict';
importScripts('/assets/dagre.min.js', '/assets/layout.js');

self.onmessage = (msg) => {
  const { id, graph } = msg.data;
  try {
    self.postMessage({ id, result: batonLayout(graph) });
  } catch (err) {
    self.postMessage({ id, error: String((err && err.message) || err) });
  }
};
