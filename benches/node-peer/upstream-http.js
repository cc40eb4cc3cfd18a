'use strict';

const { parseBodyAsObject } = require('./body-utils');

/**
 * Backoff delays (ms) between successive model-not-supported retries.
 * Index 0 → delay before the 1st retry, index 1 → delay before the 2nd retry.
 */
const MODEL_NOT_SUPPORTED_RETRY_DELAYS_MS = [1000, 2000];

function rebuildBodyFramingHeaders(headers, bodyLength) {
  const reframedHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    const lowerName = name.toLowerCase();
    if (lowerName !== 'content-length' && lowerName !== 'transfer-encoding') {
      reframedHeaders[name] = value;
    }
  }
  reframedHeaders['content-length'] = String(bodyLength);
  return reframedHeaders;
}

/**
 * Create and dispatch the upstream HTTPS request.
 * Sets up the proxyReq error handler, writes the body, and delegates response
 * handling to handleUpstreamResponse (including the one-shot retry path).
 *
 * @param {{ https: import('https'), proxyAgent: import('http').Agent, handleUpstreamResponse: Function, sleep: Function, otel: object, handleRequestError: Function, metrics: object }} deps
 * @returns {(requestHeaders: object, ctx: object) => void}
 */
function createSendUpstreamRequest({
  https,
  proxyAgent,
  handleUpstreamResponse,
  sleep,
  otel,
  handleRequestError,
  metrics,
}) {
  return function sendUpstreamRequest(requestHeaders, {
    body, targetHost, upstreamPath, req, res, provider, requestId, startTime, span, requestBytes,
    requestSigner = null,
    hasRetried = false,
    modelNotSupportedRetryCount = 0,
  }) {
    let outboundHeaders = requestHeaders;
    if (requestSigner) {
      try {
        outboundHeaders = requestSigner({
          method: req.method,
          path: upstreamPath,
          headers: requestHeaders,
          body,
          targetHost,
        });
      } catch (err) {
        otel.endSpanError(span, err, 503);
        handleRequestError(err, {
          res, requestId, provider, req, targetHost, startTime,
          statusCode: 503,
          clientMessage: 'AWS request signing unavailable',
          extraMetrics: () => {
            metrics.increment('requests_total', { provider, method: req.method, status_class: '5xx' });
          },
        });
        return;
      }
    }

    const options = {
      hostname: targetHost, port: 443, path: upstreamPath,
      method: req.method, headers: outboundHeaders,
      agent: proxyAgent,
    };

    const proxyReq = https.request(options, (proxyRes) => {
      handleUpstreamResponse(proxyRes, outboundHeaders, {
        body, res, provider, requestId, req, targetHost, startTime, span, requestBytes,
        hasRetried,
        modelNotSupportedRetryCount,
        onRetry: (retryHeaders) => sendUpstreamRequest(retryHeaders, {
          body, targetHost, upstreamPath, req, res, provider, requestId, startTime, span, requestBytes, requestSigner,
          hasRetried: true,
          modelNotSupportedRetryCount,
        }),
        onModelNotSupportedRetry: () => {
          const delayMs = MODEL_NOT_SUPPORTED_RETRY_DELAYS_MS[modelNotSupportedRetryCount] ?? 2000;
          sleep(delayMs).then(() => {
            sendUpstreamRequest(requestHeaders, {
              body, targetHost, upstreamPath, req, res, provider, requestId, startTime, span, requestBytes, requestSigner,
              hasRetried,
              modelNotSupportedRetryCount: modelNotSupportedRetryCount + 1,
            });
          });
        },
        onModelEndpointBlockedRetry: () => {
          // The model resolved from the alias is not accessible via this endpoint
          // (e.g. gpt-5.4-mini on Copilot /chat/completions).  Try the next
          // ranked candidate stored on the request object during body transform.
          const candidates = req.awfModelCandidates;
          if (!Array.isArray(candidates) || candidates.length < 2) return false;

          // Determine which model was sent in the current body.
          const parsed = parseBodyAsObject(body);
          const currentModel = parsed && parsed.model;
          if (!currentModel) return false;

          const currentIdx = candidates.indexOf(currentModel);
          if (currentIdx < 0 || currentIdx >= candidates.length - 1) return false;

          const nextModel = candidates[currentIdx + 1];

          // Rewrite the body with the next candidate.
          const newParsed = parseBodyAsObject(body);
          if (!newParsed) return false;
          newParsed.model = nextModel;
          const newBody = Buffer.from(JSON.stringify(newParsed), 'utf8');
          const retryHeaders = rebuildBodyFramingHeaders(requestHeaders, newBody.length);

          // Update the candidates list so if the next model also fails we can
          // continue falling back (by shifting the current index forward).
          sendUpstreamRequest(retryHeaders, {
            body: newBody, targetHost, upstreamPath, req, res, provider, requestId, startTime, span,
            requestBytes: newBody.length, requestSigner,
            hasRetried,
            modelNotSupportedRetryCount,
          });
          return true;
        },
      });
    });

    proxyReq.on('error', (err) => {
      otel.endSpanError(span, err, 502);
      handleRequestError(err, {
        res, requestId, provider, req, targetHost, startTime,
        statusCode: 502, clientMessage: 'Proxy error',
        extraMetrics: (duration) => {
          metrics.increment('requests_total', { provider, method: req.method, status_class: '5xx' });
          metrics.observe('request_duration_ms', duration, { provider });
        },
      });
    });

    if (body.length > 0) proxyReq.write(body);
    proxyReq.end();
  };
}

module.exports = {
  MODEL_NOT_SUPPORTED_RETRY_DELAYS_MS,
  rebuildBodyFramingHeaders,
  createSendUpstreamRequest,
};
