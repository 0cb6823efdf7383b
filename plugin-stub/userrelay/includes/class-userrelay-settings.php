<?php
/**
 * Settings: where the relay is, who this site is, its key, and the optional policies.
 *
 * Every setting is read from its wp-config.php constant when that is defined, else from the
 * option the Settings → UserRelay page saves. This class owns the meta deny list too, so the
 * reporting side and the applying side can never disagree about which keys are private.
 * It must not print or log the key.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Reads and validates the plugin's settings.
 */
final class UserRelay_Settings {

	/** Options saved by the settings page, keyed by the constant that overrides each. */
	const OPTIONS = array(
		'USERRELAY_URL'  => 'userrelay_url',
		'USERRELAY_SITE' => 'userrelay_site',
		'USERRELAY_KEY'  => 'userrelay_key',
	);

	/** Standard Webhooks secret prefix; the rest is base64 of the HMAC key bytes. */
	const KEY_PREFIX = 'whsec_';

	/** Smallest and largest HMAC key accepted, in bytes (the Standard Webhooks range). */
	const KEY_MIN_BYTES = 24;
	const KEY_MAX_BYTES = 64;

	/**
	 * Meta keys never reported nor written: sessions, capabilities (roles travel as roles),
	 * per-screen admin state, credentials of Application Passwords, and our own keys.
	 * '*' matches any run of characters.
	 */
	const DEFAULT_META_DENY = array(
		'session_tokens',
		'*capabilities',
		'*user_level',
		'*user-settings*',
		'*dashboard_quick_press_last_post_id',
		'community-events-location',
		'_application_passwords',
		'userrelay_*',
	);

	/**
	 * The compiled deny list, built on first use.
	 *
	 * @var string|null
	 */
	private $deny_regex = null;

	/**
	 * The relay's base URL without a trailing slash, e.g. http://127.0.0.1:8480.
	 */
	public function url(): string {
		return rtrim( trim( $this->raw( 'USERRELAY_URL' ) ), '/' );
	}

	/**
	 * This site's id at the relay.
	 */
	public function site(): string {
		return trim( $this->raw( 'USERRELAY_SITE' ) );
	}

	/**
	 * The whsec_ key, as pasted.
	 */
	public function key(): string {
		return trim( $this->raw( 'USERRELAY_KEY' ) );
	}

	/**
	 * Whether a setting comes from wp-config.php (and so cannot be changed on the settings page).
	 *
	 * @param string $constant One of the keys of self::OPTIONS.
	 */
	public function is_constant( string $constant ): bool {
		return defined( $constant );
	}

	/**
	 * The HMAC key bytes, or null when no valid key is configured.
	 */
	public function hmac_key(): ?string {
		$key = $this->key();
		return null === self::key_problem( $key ) ? base64_decode( substr( $key, strlen( self::KEY_PREFIX ) ), true ) : null;
	}

	/**
	 * Whether URL, site id and a valid key are all set.
	 */
	public function is_configured(): bool {
		return '' !== $this->url() && '' !== $this->site() && null !== $this->hmac_key();
	}

	/**
	 * What is missing or wrong, one sentence each (empty when configured).
	 *
	 * @return string[]
	 */
	public function problems(): array {
		$problems = array();
		if ( '' === $this->url() ) {
			$problems[] = __( 'The relay URL is not set (USERRELAY_URL).', 'userrelay' );
		} elseif ( ! in_array( wp_parse_url( $this->url(), PHP_URL_SCHEME ), array( 'http', 'https' ), true ) || ! wp_parse_url( $this->url(), PHP_URL_HOST ) ) {
			/* translators: %s: the URL. */
			$problems[] = sprintf( __( 'The relay URL %s is not a valid http(s) URL.', 'userrelay' ), $this->url() );
		}
		if ( '' === $this->site() ) {
			$problems[] = __( "This site's id at the relay is not set (USERRELAY_SITE).", 'userrelay' );
		}
		$key_problem = self::key_problem( $this->key() );
		if ( null !== $key_problem ) {
			$problems[] = $key_problem;
		}
		return $problems;
	}

	/**
	 * Why a key is unusable, or null when it is a valid whsec_ key.
	 *
	 * @param string $key The key as pasted.
	 */
	public static function key_problem( string $key ): ?string {
		if ( '' === $key ) {
			return __( 'The key is not set (USERRELAY_KEY).', 'userrelay' );
		}
		if ( 0 !== strpos( $key, self::KEY_PREFIX ) ) {
			return __( 'The key must start with whsec_ (paste it exactly as `userrelay keys generate` printed it).', 'userrelay' );
		}
		$bytes = base64_decode( substr( $key, strlen( self::KEY_PREFIX ) ), true );
		if ( false === $bytes || strlen( $bytes ) < self::KEY_MIN_BYTES || strlen( $bytes ) > self::KEY_MAX_BYTES ) {
			return __( 'The key is not whsec_ followed by base64 of 24 to 64 bytes; it may have been cut when pasted.', 'userrelay' );
		}
		return null;
	}

	/**
	 * A key shown without revealing it: prefix, first and last two characters, length.
	 *
	 * @param string $key The key.
	 */
	public static function mask_key( string $key ): string {
		if ( strlen( $key ) < 14 ) {
			return str_repeat( '•', strlen( $key ) );
		}
		/* translators: 1: start of the key, 2: end of the key, 3: its length. */
		return sprintf( __( '%1$s…%2$s (%3$d characters)', 'userrelay' ), substr( $key, 0, 8 ), substr( $key, -2 ), strlen( $key ) );
	}

	/**
	 * USERRELAY_SYNC_ADMINS: whether administrators are reported and may be overwritten.
	 */
	public function sync_admins(): bool {
		return defined( 'USERRELAY_SYNC_ADMINS' ) && (bool) USERRELAY_SYNC_ADMINS;
	}

	/**
	 * USERRELAY_DELETE_REASSIGN, read as what to do with a deleted user's posts and links:
	 * a user id to reassign them to; 'delete' to delete them with the user (what wp_delete_user()
	 * does by default); or null (not defined, the default) to refuse deleting a user who owns any.
	 *
	 * @return int|string|null
	 */
	public function delete_reassign() {
		if ( ! defined( 'USERRELAY_DELETE_REASSIGN' ) ) {
			return null;
		}
		$value = USERRELAY_DELETE_REASSIGN;
		if ( 'delete' === $value ) {
			return 'delete';
		}
		return is_numeric( $value ) && (int) $value > 0 ? (int) $value : null;
	}

	/**
	 * Every deny pattern: the defaults plus USERRELAY_META_DENY (comma-separated).
	 *
	 * @return string[]
	 */
	public function meta_deny_patterns(): array {
		$extra = defined( 'USERRELAY_META_DENY' ) ? explode( ',', (string) USERRELAY_META_DENY ) : array();
		$extra = array_filter( array_map( 'trim', $extra ), 'strlen' );
		return array_values( array_unique( array_merge( self::DEFAULT_META_DENY, $extra ) ) );
	}

	/**
	 * Whether a meta key must never be synced.
	 *
	 * @param string $key A user meta key.
	 */
	public function is_meta_denied( string $key ): bool {
		if ( null === $this->deny_regex ) {
			$parts = array();
			foreach ( $this->meta_deny_patterns() as $pattern ) {
				$parts[] = str_replace( '\*', '.*', preg_quote( $pattern, '/' ) );
			}
			$this->deny_regex = '/^(?:' . implode( '|', $parts ) . ')$/s';
		}
		return 1 === preg_match( $this->deny_regex, $key );
	}

	/**
	 * A setting's raw value: the constant if defined, else the option.
	 *
	 * @param string $constant One of the keys of self::OPTIONS.
	 */
	private function raw( string $constant ): string {
		if ( defined( $constant ) ) {
			return (string) constant( $constant );
		}
		return (string) get_option( self::OPTIONS[ $constant ], '' );
	}
}
