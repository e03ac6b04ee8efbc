// The API reference: Redoc (vendored, assets/vendor/redoc) rendering this server's own OpenAPI
// document. Nothing is fetched from elsewhere.
'use strict';
(function () {
  const root = document.getElementById('redoc');
  const failed = (err) => {
    root.textContent = `The API reference could not be rendered: ${err}. The document itself is at /v1/openapi.json.`;
    root.dataset.state = 'failed';
  };
  if (typeof Redoc === 'undefined') {
    failed('the Redoc script did not load');
    return;
  }
  Redoc.init('/v1/openapi.json', {
    expandResponses: '200,201',
    hideDownloadButton: false,
    jsonSampleExpandLevel: 2,
    pathInMiddlePanel: true,
    requiredPropsFirst: true,
    sortPropsAlphabetically: false,
    theme: { typography: { fontFamily: 'system-ui, sans-serif', headings: { fontFamily: 'system-ui, sans-serif' } } },
  }, root, (err) => {
    if (err) failed(err);
    else root.dataset.state = 'rendered';
  });
})();
