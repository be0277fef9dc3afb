/*
 * Starts Swagger UI on the API docs page (server/templates/api_docs.html) over the live
 * OpenAPI document. Requests go to this server under its base URL (JupyterHub: /user/<name>/),
 * carry the browser's login cookie (same origin) and the server's XSRF token, so "Try it out"
 * works for state-changing calls too. Nothing is loaded from anywhere else (validatorUrl: null).
 */
(function () {
  'use strict';
  var root = document.getElementById('swagger-ui');

  function xsrfToken() {
    // the cookie is the truth (it may be renewed); the page's copy is the fallback
    var match = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
    return match ? decodeURIComponent(match[1]) : root.dataset.xsrfToken;
  }

  function serverUrl() {
    // the document's paths start with /taskrun/api: prefix the server's base URL
    return window.location.origin + root.dataset.baseUrl.replace(/\/+$/, '');
  }

  function start(spec) {
    spec.servers = [{ url: serverUrl(), description: 'this Jupyter server' }];
    window.taskrunSwaggerUI = window.SwaggerUIBundle({
      spec: spec,
      domNode: root,
      deepLinking: true,
      validatorUrl: null,
      presets: [window.SwaggerUIBundle.presets.apis],
      layout: 'BaseLayout',
      requestInterceptor: function (request) {
        var token = xsrfToken();
        if (token) {
          request.headers['X-XSRFToken'] = token;
        }
        request.credentials = 'same-origin';
        return request;
      }
    });
  }

  function fail(message) {
    var p = document.createElement('p');
    p.setAttribute('role', 'alert');
    p.textContent = 'Could not load the OpenAPI document: ' + message;
    root.replaceChildren(p);
  }

  fetch(root.dataset.specUrl, {
    credentials: 'same-origin',
    headers: { Accept: 'application/json' }
  })
    .then(function (response) {
      if (!response.ok) {
        throw new Error(response.status + ' ' + response.statusText);
      }
      return response.json();
    })
    .then(start)
    .catch(function (error) {
      fail(String(error && error.message ? error.message : error));
    });
})();
