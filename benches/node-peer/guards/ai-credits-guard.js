'use strict';

const { logRequest, sanitizeForLog } = require('../logging');
const pricingByModel = require('../ai-credits-pricing');
const { resolveCatalogModel } = require('../models-dev-catalog');
const { resolveRuntimePricing } = require('../runtime-model-catalog');
const { resolveProviderPricingOverlay } = require('../provider-pricing-overlays');
const { parsePositiveNumber } = require('./guard-utils');
const { PROVIDER_ANTHROPIC, PROVIDER_COPILOT } = require('../provider-names');

const TOKENS_PER_MILLION = 1_000_000;
const DOLLARS_PER_CREDIT = 0.01;
const CREDIT_DENOMINATOR = TOKENS_PER_MILLION * DOLLARS_PER_CREDIT;

// Absolute hard cap on AI credits that cannot be overridden by configuration.
// This is a safety limit to prevent runaway spending regardless of what
// maxAiCredits is set to via CLI flags or config files.
const HARD_CAP_AI_CREDITS = 10_000;

// Conservative fallback pricing ($/1M tokens) used when the model is the
// 'unknown' sentinel — i.e., both response and request omitted the model name.
// Uses claude-sonnet-4 level rates so credits are tracked rather than lost.
const BUILTIN_FALLBACK_PRICING = Object.freeze({
  input: 3.00,
  cachedInput: 0.30,
  cacheWrite: 3.75,
  output: 15.00,
});

// Static ceiling for recognized dynamic selectors whose concrete runtime model
// is unknown at accounting time. These rates bound every priced Copilot model
// in the curated catalog; retain the ceiling if the catalog is unavailable.
const DYNAMIC_SELECTOR_PRICING_CEILING = Object.freeze({
  input: 10.00,
  cachedInput: 1.00,
  cacheWrite: 12.50,
  output: 50.00,
});

function buildDynamicSelectorFallbackPricing() {
  const pricing = { ...DYNAMIC_SELECTOR_PRICING_CEILING };
  for (const catalogPricing of Object.values(pricingByModel)) {
    for (const field of Object.keys(pricing)) {
      if (typeof catalogPricing[field] === 'number') {
        pricing[field] = Math.max(pricing[field], catalogPricing[field]);
      }
    }
  }
  return Object.freeze(pricing);
}

const DYNAMIC_SELECTOR_FALLBACK_PRICING = buildDynamicSelectorFallbackPricing();

// Kept separate from the generic unknown-model fallback because a dynamic
// selector is an explicit provider-supported request, not an unknown model.
const DYNAMIC_SELECTOR_FALLBACK_PRICING_SOURCE = 'dynamic_selector_fallback';

function getDynamicSelectorDescriptor(model, provider = undefined) {
  if (typeof model !== 'string') return null;
  if (provider !== PROVIDER_COPILOT) return null;
  if (model.toLowerCase() !== 'auto') return null;
  return { name: 'copilot:auto' };
}

function isRecognizedDynamicSelector(model, provider = undefined) {
  return !!getDynamicSelectorDescriptor(model, provider);
}

function roundCredits(value) {
  return Math.round((value + Number.EPSILON) * 1_000_000) / 1_000_000;
}

function createAiCreditsState() {
  return {
    totalAiCredits: 0,
    byModel: {},
    warnedUnknownModels: new Set(),
  };
}

let aiCreditsState = createAiCreditsState();

const aiCreditsConfigCache = {
  rawMax: undefined,
  rawDefault: undefined,
  parsed: { max: null, defaultPricing: null },
};

function getAiCreditsConfig() {
  const rawMax = process.env.AWF_MAX_AI_CREDITS;
  const rawDefault = process.env.AWF_DEFAULT_AI_CREDITS_PRICING;
  if (aiCreditsConfigCache.rawMax === rawMax && aiCreditsConfigCache.rawDefault === rawDefault) {
    return aiCreditsConfigCache.parsed;
  }
  aiCreditsConfigCache.rawMax = rawMax;
  aiCreditsConfigCache.rawDefault = rawDefault;

  let defaultPricing = null;
  if (rawDefault) {
    try {
      const parsed = JSON.parse(rawDefault);
      if (parsed && typeof parsed.input === 'number' && typeof parsed.output === 'number') {
        defaultPricing = {
          input: parsed.input,
          cachedInput: parsed.cachedInput ?? parsed.input * 0.1,
          cacheWrite: parsed.cacheWrite ?? null,
          output: parsed.output,
        };
      }
    } catch { /* invalid JSON — leave null */ }
  }

  const parsedMax = parsePositiveNumber(rawMax);
  aiCreditsConfigCache.parsed = {
    max: parsedMax ? Math.min(parsedMax, HARD_CAP_AI_CREDITS) : null,
    defaultPricing,
  };
  return aiCreditsConfigCache.parsed;
}

/**
 * Canonicalize a model name by stripping provider prefix and normalizing
 * common deployment suffixes and separators (dash, dot, underscore are all
 * treated as equivalent).
 * E.g. "copilot/claude-sonnet-4.6" → "claude-sonnet-4-6"
 *      "claude_sonnet_4_6"          → "claude-sonnet-4-6"
 *      "gpt-5-codex-mini-alpha-2025-11-07" → "gpt-5-codex-mini"
 */
function canonicalizeModel(model) {
  const bare = model.includes('/') ? model.slice(model.indexOf('/') + 1) : model;
  const withoutDateSuffix = bare.replace(/(-alpha)?-(\d{4}-\d{2}-\d{2}|\d{8})$/, '');
  return withoutDateSuffix.replace(/[._]/g, '-');
}

function resolveModelPricing(model, state = aiCreditsState, provider = undefined, inputTokens = 0, options = {}) {
  const operatorPricing = provider ? resolveProviderPricingOverlay(provider, model) : null;
  if (operatorPricing) return operatorPricing;

  const runtime = provider ? resolveRuntimePricing(provider, model, inputTokens) : null;
  if (runtime && ['input', 'cachedInput', 'cacheWrite', 'output']
    .every(field => Object.hasOwn(runtime.pricing, field))) {
    return runtime;
  }
  const fallback = resolveLowerPriorityPricing(model, state, { ...options, provider });
  if (!runtime) return fallback;
  const mergedPricing = {};
  for (const field of ['input', 'cachedInput', 'cacheWrite', 'output']) {
    if (Object.hasOwn(runtime.pricing, field)) {
      mergedPricing[field] = runtime.pricing[field];
    } else if (fallback?.pricing && Object.hasOwn(fallback.pricing, field)) {
      mergedPricing[field] = fallback.pricing[field];
    } else {
      return null;
    }
  }
  return { ...runtime, pricing: mergedPricing };
}

function resolveLowerPriorityPricing(model, state, options = {}) {
  if (Object.hasOwn(pricingByModel, model)) {
    return { pricing: pricingByModel[model], source: 'curated', tier: 'default' };
  }

  const canonical = canonicalizeModel(model);

  // Try canonical form against canonicalized pricing keys
  for (const [configuredModel, pricing] of Object.entries(pricingByModel)) {
    const canonicalKey = canonicalizeModel(configuredModel);
    if (canonical === canonicalKey) return { pricing, source: 'curated', tier: 'default' };
  }

  // Prefix match: canonical model starts with a canonical pricing key
  let prefixMatch = null;
  for (const [configuredModel, pricing] of Object.entries(pricingByModel)) {
    const canonicalKey = canonicalizeModel(configuredModel);
    if (canonical.startsWith(`${canonicalKey}-`)) {
      if (!prefixMatch || canonicalKey.length > prefixMatch.key.length) {
        prefixMatch = { key: canonicalKey, pricing };
      }
    }
  }
  if (prefixMatch) return { pricing: prefixMatch.pricing, source: 'curated', tier: 'default' };

  const catalogModel = resolveCatalogModel(model);
  if (catalogModel.pricing) {
    return { pricing: catalogModel.pricing, source: 'models.dev', tier: 'default' };
  }

  const dynamicSelector = getDynamicSelectorDescriptor(model, options.provider);
  if (dynamicSelector) {
    return {
      pricing: DYNAMIC_SELECTOR_FALLBACK_PRICING,
      source: DYNAMIC_SELECTOR_FALLBACK_PRICING_SOURCE,
      tier: 'conservative',
      accountingPolicy: 'dynamic_selector_fallback',
      dynamicSelector: dynamicSelector.name,
      usedFallbackPricing: true,
    };
  }

  // Speculative callers (e.g. filtering a fallback candidate pool) pass quiet:true
  // so that probing a model neither emits an operator-facing warning nor marks the
  // model as already-warned — which would suppress the warning if it is genuinely
  // requested later.
  if (!options.quiet && !state.warnedUnknownModels.has(model)) {
    logRequest('warn', 'unknown_model_ai_credits_pricing', {
      model: sanitizeForLog(model),
    });
    state.warnedUnknownModels.add(model);
  }

  // Fall back to configured default pricing if available
  const config = getAiCreditsConfig();
  if (config.defaultPricing) {
    return { pricing: config.defaultPricing, source: 'configured_default', tier: 'default' };
  }

  // When the model is the 'unknown' sentinel (response omitted model and
  // request body didn't contain one either), use conservative fallback pricing
  // so AI credits are never silently lost. This is NOT applied to truly unknown
  // model names which should still be rejected by checkUnknownModelRejection.
  if (model === 'unknown') {
    return { pricing: BUILTIN_FALLBACK_PRICING, source: 'builtin_fallback', tier: 'default' };
  }

  return null;
}

/**
 * Side-effect-free check for whether a model has resolvable AI-credits pricing.
 *
 * Mirrors checkUnknownModelRejection's resolution (both the default and the
 * highest selectable pricing tier must resolve) but emits no logs and does not
 * mutate guard state, so it is safe to call across a large pool of speculative
 * candidates that may never be selected.
 *
 * @param {string} model
 * @param {string} [provider]
 * @returns {boolean}
 */
function isModelPriceable(model, provider = undefined) {
  if (!model) return true;
  const defaultTier = resolveModelPricing(model, aiCreditsState, provider, 0, { quiet: true });
  if (!defaultTier) return false;
  const highestTier = resolveModelPricing(
    model,
    aiCreditsState,
    provider,
    Number.MAX_SAFE_INTEGER,
    { quiet: true },
  );
  return !!highestTier;
}

/**
 * Check if a model is unresolvable and should be rejected.
 * Only rejects when maxAiCredits is active and no default pricing is configured.
 *
 * @param {string} model
 * @param {string} [provider]
 * @returns {{ rejected: boolean, model: string, error: object } | null}
 */
function checkUnknownModelRejection(model, provider = undefined) {
  const config = getAiCreditsConfig();
  if (!config.max) return null; // guard not active, don't reject
  if (!model) return null; // no model in request body, can't check
  if (config.defaultPricing) return null; // has fallback, don't reject
  const defaultPricing = resolveModelPricing(model, aiCreditsState, provider);
  const highestTierPricing = resolveModelPricing(
    model,
    aiCreditsState,
    provider,
    Number.MAX_SAFE_INTEGER,
  );
  if (defaultPricing && highestTierPricing) return null; // every selectable tier resolved

  return {
    rejected: true,
    model,
    error: {
      type: 'unknown_model_ai_credits',
      message: `Model "${model}" has no AI credits pricing and no default pricing is configured. ` +
        'Set apiProxy.defaultAiCreditsPricing in the AWF config (e.g. {"input": 3.0, "output": 15.0}) ' +
        'to provide a fallback rate, or add the model to the pricing table.',
      model,
    },
  };
}

function calculateAiCredits(normalizedUsage, model, state = aiCreditsState, provider = undefined) {
  const reportedInput = normalizedUsage.input_tokens || 0;
  const cacheReadTokens = normalizedUsage.cache_read_tokens || 0;
  const cacheWriteTokens = normalizedUsage.cache_write_tokens || 0;
  const inputIncludesCache = normalizedUsage.input_tokens_include_cache === true;
  const additiveInput = provider === PROVIDER_ANTHROPIC ||
    (provider === PROVIDER_COPILOT && !inputIncludesCache);
  const totalInputForTier = additiveInput
    ? reportedInput + cacheReadTokens + cacheWriteTokens
    : reportedInput;
  const pricingResolution = resolveModelPricing(model, state, provider, totalInputForTier);
  if (!pricingResolution) return null;
  const { pricing } = pricingResolution;
  const dynamicSelector = getDynamicSelectorDescriptor(model, provider);

  // input_tokens semantics differ by provider:
  //  - Anthropic and Copilot's precise copilot_usage report input_tokens as the
  //    NON-cached input only;
  //    cache_read_input_tokens and cache_creation_input_tokens are reported
  //    separately and are ADDITIVE to input_tokens. Subtracting them here would
  //    over-subtract and undercount the genuinely-fresh input tokens.
  //  - OpenAI-style usage (including Copilot responses without copilot_usage)
  //    reports prompt_tokens/input_tokens
  //    as the TOTAL input, with cached tokens being a SUBSET. Those must be
  //    subtracted before applying the full input rate to avoid double-counting.
  const nonCachedInput = additiveInput
    ? reportedInput
    : Math.max(0, reportedInput - cacheReadTokens - cacheWriteTokens);

  const inputCredits = (nonCachedInput * pricing.input) / CREDIT_DENOMINATOR;
  const cachedInputCredits = (cacheReadTokens * pricing.cachedInput) / CREDIT_DENOMINATOR;
  const cacheWriteCredits = pricing.cacheWrite
    ? (cacheWriteTokens * pricing.cacheWrite) / CREDIT_DENOMINATOR
    : 0;
  const outputCredits = ((normalizedUsage.output_tokens || 0) * pricing.output) / CREDIT_DENOMINATOR;
  const totalCredits = inputCredits + cachedInputCredits + cacheWriteCredits + outputCredits;

  return {
    inputCredits,
    cachedInputCredits,
    cacheWriteCredits,
    outputCredits,
    totalCredits,
    pricingSource: pricingResolution.source,
    pricingTier: pricingResolution.tier,
    pricingObservedAt: pricingResolution.observedAt,
    pricingApiVersion: pricingResolution.apiVersion,
    pricingDiscountPercent: pricingResolution.discountPercent,
    accountingPolicy: pricingResolution.accountingPolicy ||
      (dynamicSelector ? 'dynamic_selector_runtime' : model === 'unknown' ? 'unknown_model_fallback' : 'concrete_model'),
    usedFallbackPricing: pricingResolution.usedFallbackPricing === true ||
      pricingResolution.source === 'configured_default' ||
      pricingResolution.source === 'builtin_fallback' ||
      pricingResolution.source === 'dynamic_selector_fallback',
    dynamicSelector: pricingResolution.dynamicSelector || dynamicSelector?.name || null,
  };
}

function applyAiCreditsUsage(normalizedUsage, model, provider = undefined) {
  if (!normalizedUsage) return null;
  const safeModel = model || 'unknown';
  const calc = calculateAiCredits(normalizedUsage, safeModel, aiCreditsState, provider);
  if (!calc) return null;

  if (!Object.hasOwn(aiCreditsState.byModel, safeModel)) {
    aiCreditsState.byModel[safeModel] = {
      inputCredits: 0,
      cachedInputCredits: 0,
      cacheWriteCredits: 0,
      outputCredits: 0,
      totalCredits: 0,
      pricingSource: calc.pricingSource,
      pricingTier: calc.pricingTier,
      accountingPolicy: calc.accountingPolicy,
      fallbackPricingUsed: calc.usedFallbackPricing,
      dynamicSelector: calc.dynamicSelector,
    };
  }

  const modelBucket = aiCreditsState.byModel[safeModel];
  modelBucket.inputCredits += calc.inputCredits;
  modelBucket.cachedInputCredits += calc.cachedInputCredits;
  modelBucket.cacheWriteCredits += calc.cacheWriteCredits;
  modelBucket.outputCredits += calc.outputCredits;
  modelBucket.totalCredits += calc.totalCredits;
  modelBucket.pricingSource = calc.pricingSource;
  modelBucket.pricingTier = calc.pricingTier;
  modelBucket.accountingPolicy = calc.accountingPolicy;
  modelBucket.fallbackPricingUsed = calc.usedFallbackPricing;
  modelBucket.dynamicSelector = calc.dynamicSelector;
  aiCreditsState.totalAiCredits += calc.totalCredits;

  process.env.AWF_AI_CREDITS_USED = String(roundCredits(aiCreditsState.totalAiCredits));

  return {
    aiCreditsThisResponse: roundCredits(calc.totalCredits),
    inputCreditsThisResponse: roundCredits(calc.inputCredits),
    cachedInputCreditsThisResponse: roundCredits(calc.cachedInputCredits),
    cacheWriteCreditsThisResponse: roundCredits(calc.cacheWriteCredits),
    outputCreditsThisResponse: roundCredits(calc.outputCredits),
    totalAiCredits: roundCredits(aiCreditsState.totalAiCredits),
    pricingSource: calc.pricingSource,
    pricingTier: calc.pricingTier,
    accountingPolicy: calc.accountingPolicy,
    fallbackPricingUsed: calc.usedFallbackPricing,
    dynamicSelector: calc.dynamicSelector,
    ...(calc.pricingObservedAt ? { pricingObservedAt: calc.pricingObservedAt } : {}),
    ...(calc.pricingApiVersion ? { pricingApiVersion: calc.pricingApiVersion } : {}),
    ...(calc.pricingDiscountPercent !== undefined
      ? { pricingDiscountPercent: calc.pricingDiscountPercent }
      : {}),
  };
}

function getAiCreditsReflectState() {
  const byModel = {};
  for (const [model, usage] of Object.entries(aiCreditsState.byModel)) {
    byModel[model] = {
      input_credits: roundCredits(usage.inputCredits),
      cached_input_credits: roundCredits(usage.cachedInputCredits),
      cache_write_credits: roundCredits(usage.cacheWriteCredits),
      output_credits: roundCredits(usage.outputCredits),
      total: roundCredits(usage.totalCredits),
      pricing_source: usage.pricingSource,
      pricing_tier: usage.pricingTier,
      accounting_policy: usage.accountingPolicy || null,
      fallback_pricing_used: usage.fallbackPricingUsed === true,
      dynamic_selector: usage.dynamicSelector || null,
    };
  }
  return {
    total: roundCredits(aiCreditsState.totalAiCredits),
    by_model: byModel,
  };
}

function getAiCreditsBlockState() {
  const config = getAiCreditsConfig();
  const roundedTotalAiCredits = roundCredits(aiCreditsState.totalAiCredits);

  // Hard cap always applies, regardless of config
  if (roundedTotalAiCredits >= HARD_CAP_AI_CREDITS) {
    return {
      maxAiCredits: HARD_CAP_AI_CREDITS,
      totalAiCredits: roundedTotalAiCredits,
      maxExceeded: true,
      hardCap: true,
    };
  }

  if (!config.max) return null;
  return {
    maxAiCredits: config.max,
    totalAiCredits: roundedTotalAiCredits,
    maxExceeded: roundedTotalAiCredits >= config.max,
  };
}

function buildAiCreditsLimitError(aiCreditsBlockState) {
  const isHardCap = aiCreditsBlockState.hardCap === true;
  return {
    error: {
      type: 'ai_credits_limit_exceeded',
      message: isHardCap
        ? `Hard cap on AI credits reached (${aiCreditsBlockState.totalAiCredits.toFixed(6)} / ${aiCreditsBlockState.maxAiCredits}). This limit cannot be overridden.`
        : `Maximum AI credits exceeded (${aiCreditsBlockState.totalAiCredits.toFixed(6)} / ${aiCreditsBlockState.maxAiCredits}).`,
      total_ai_credits: aiCreditsBlockState.totalAiCredits,
      max_ai_credits: aiCreditsBlockState.maxAiCredits,
      hard_cap: isHardCap,
    },
  };
}

function resetAiCreditsGuardForTests() {
  aiCreditsState = createAiCreditsState();
  aiCreditsConfigCache.rawMax = undefined;
  aiCreditsConfigCache.rawDefault = undefined;
  aiCreditsConfigCache.parsed = { max: null, defaultPricing: null };
  delete process.env.AWF_AI_CREDITS_USED;
}

module.exports = {
  HARD_CAP_AI_CREDITS,
  applyAiCreditsUsage,
  getAiCreditsReflectState,
  getAiCreditsBlockState,
  buildAiCreditsLimitError,
  checkUnknownModelRejection,
  isRecognizedDynamicSelector,
  isModelPriceable,
  canonicalizeModel,
  resetAiCreditsGuardForTests,
};
