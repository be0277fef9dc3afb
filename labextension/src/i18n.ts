/**
 * Translations: the plugin passes Lab's ITranslator once; every module then
 * uses `trans` (a bundle of the `jupyter_taskrun` domain).
 */
import {
  ITranslator,
  nullTranslator,
  TranslationBundle
} from '@jupyterlab/translation';

export let trans: TranslationBundle = nullTranslator.load('jupyter_taskrun');

export function setTranslator(translator: ITranslator | null): void {
  trans = (translator ?? nullTranslator).load('jupyter_taskrun');
}
