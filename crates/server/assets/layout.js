// The one place that calls the vendored dagre (vendor/dagre, see VERSION.md there). Loaded by
// the page (fallback when Web Workers are unavailable) and by layout-worker.js.
//
// graph: {options: dagre graph options, nodes: [{id, width, height}],
//         edges: [{v, w, width, height}]}  (an edge with a width/height gets a label position)
// returns {width, height, nodes: [{x, y}] (node centres, same order), edges: [{points, x, y}]}
'use strict';

function batonLayout(graph) {
  const g = new dagre.graphlib.Graph({ multigraph: true });
  g.setGraph(Object.assign({}, graph.options));
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of graph.nodes) g.setNode(n.id, { width: n.width, height: n.height });
  graph.edges.forEach((e, i) => {
    g.setEdge(e.v, e.w, { width: e.width || 0, height: e.height || 0, labelpos: 'c' }, 'e' + i);
  });
  dagre.layout(g);
  const size = g.graph();
  return {
    width: size.width || 0,
    height: size.height || 0,
    nodes: graph.nodes.map((n) => {
      const p = g.node(n.id);
      return { x: p.x, y: p.y };
    }),
    edges: graph.edges.map((e, i) => {
      const p = g.edge(e.v, e.w, 'e' + i);
      return { points: p.points, x: p.x, y: p.y };
    }),
  };
}
