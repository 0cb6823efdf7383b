<?php
/**
 * Settings: where the relay is, who this site is, its key, and the optional policies.
 *
 * Every setting is read from its wp-config.php constant when that is defined, else from the
 * option the settings page saves: a blog option on a single site. On a multisite network each
 * blog is a site of its own at the relay, with its own site id and key, read for the blog
 * being served (the current one, or the one switch_to_blog() chose): they are site options
 * of the network, one set per blog, which only the network admin writes (per-blog options are
 * ignored); USERRELAY_URL applies to every blog, USERRELAY_SITE and USERRELAY_KEY to the
 * primary blog only (USERRELAY_BLOG_ID, else the main site; docs/adr/0016-multisite.md). This
 * class owns the meta rule too (UserRelay_Protected_Meta plus USERRELAY_META_DENY), so the
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

	/** On a network, meta keys naming its blogs (meaningless anywhere else): never synced. */
	const NETWORK_META = array( 'primary_blog', 'source_domain' );

	/** Smallest and largest HMAC key accepted, in bytes (the Standard Webhooks range). */
	const KEY_MIN_BYTES = 24;
	const KEY_MAX_BYTES = 64;

	/**
	 * The compiled USERRELAY_META_DENY patterns, built on first use ('' when there are none).
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
		if ( 'USERRELAY_URL' !== $constant && ! $this->is_primary_blog() ) {
			return false; // One site id and key in wp-config.php: the primary blog's.
		}
		return defined( $constant );
	}

	/**
	 * The HMAC key bytes, or null when no valid key is configured.
	 */
	public function hmac_key(): ?string {
		$key = $this->key();
		return null === self::key_problem( $key ) ? base64_decode( substr( $key, strlen( UserRelay_Facts::KEY_PREFIX ) ), true ) : null;
	}

	/**
	 * Whether URL, site id and a valid key are all set.
	 */
	public function is_configured(): bool {
		return '' !== $this->url() && null === self::url_problem( $this->url() ) && '' !== $this->site() && null !== $this->hmac_key();
	}

	/**
	 * Why a relay URL is unusable, or null when it is https, or plain http to this machine
	 * (127.0.0.0/8, ::1, localhost), as the relay allows plain http only for a site on its machine.
	 *
	 * @param string $url The relay URL.
	 */
	public static function url_problem( string $url ): ?string {
		$scheme = strtolower( (string) wp_parse_url( $url, PHP_URL_SCHEME ) );
		$host   = strtolower( trim( (string) wp_parse_url( $url, PHP_URL_HOST ), '[]' ) );
		if ( ! in_array( $scheme, array( 'http', 'https' ), true ) || '' === $host ) {
			/* translators: %s: the URL. */
			return sprintf( __( 'The relay URL %s is not a valid http(s) URL.', 'userrelay' ), $url );
		}
		if ( 'http' === $scheme && ! self::is_loopback( $host ) ) {
			/* translators: %s: the URL. */
			return sprintf( __( 'The relay URL %s is plain http to another machine: the key\'s signatures and your users\' data would cross the network unencrypted. Use https:// (plain http is allowed only for a relay on this machine: 127.0.0.1, ::1 or localhost).', 'userrelay' ), $url );
		}
		return null;
	}

	/**
	 * Whether a host name or address is this machine: localhost, 127.0.0.0/8 or ::1.
	 *
	 * @param string $host Host, without brackets.
	 */
	public static function is_loopback( string $host ): bool {
		if ( 'localhost' === $host ) {
			return true;
		}
		if ( false !== filter_var( $host, FILTER_VALIDATE_IP, FILTER_FLAG_IPV4 ) ) {
			return 0 === strpos( $host, '127.' );
		}
		if ( false !== filter_var( $host, FILTER_VALIDATE_IP, FILTER_FLAG_IPV6 ) ) {
			return inet_pton( $host ) === inet_pton( '::1' );
		}
		return false;
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
		} else {
			$url_problem = self::url_problem( $this->url() );
			if ( null !== $url_problem ) {
				$problems[] = $url_problem;
			}
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
		if ( 0 !== strpos( $key, UserRelay_Facts::KEY_PREFIX ) ) {
			return __( 'The key must start with whsec_ (paste it exactly as `userrelay keys generate` printed it).', 'userrelay' );
		}
		$bytes = base64_decode( substr( $key, strlen( UserRelay_Facts::KEY_PREFIX ) ), true );
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
	 * Whether privileged users (UserRelay_Privileges) are reported and may be changed, and
	 * privileged roles given, by deliveries: USERRELAY_SYNC_PRIVILEGED, or the older
	 * USERRELAY_SYNC_ADMINS (same meaning). Off by default.
	 */
	public function sync_privileged(): bool {
		foreach ( array( 'USERRELAY_SYNC_PRIVILEGED', 'USERRELAY_SYNC_ADMINS' ) as $constant ) {
			if ( defined( $constant ) && (bool) constant( $constant ) ) {
				return true;
			}
		}
		return false;
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
	 * USERRELAY_NETWORK_DELETE (multisite only, off by default): whether a delivered delete that
	 * removes a user from their last blog of the network also deletes them from the network
	 * (wpmu_delete_user()). Off, they stay a network user of no blog, as when a blog's admin
	 * removes someone.
	 */
	public function network_delete(): bool {
		return is_multisite() && defined( 'USERRELAY_NETWORK_DELETE' ) && (bool) USERRELAY_NETWORK_DELETE;
	}

	/**
	 * The site's extra deny patterns, USERRELAY_META_DENY (comma-separated; '*' matches any run
	 * of characters; compared ignoring case, as the database compares keys).
	 *
	 * @return string[]
	 */
	public function meta_deny_patterns(): array {
		$extra = defined( 'USERRELAY_META_DENY' ) ? explode( ',', (string) USERRELAY_META_DENY ) : array();
		return array_values( array_unique( array_filter( array_map( 'trim', $extra ), 'strlen' ) ) );
	}

	/**
	 * Whether a meta key must never be synced: not syncable by the shared rule
	 * (UserRelay_Protected_Meta), or matching USERRELAY_META_DENY.
	 *
	 * @param string $key A user meta key.
	 */
	public function is_meta_denied( string $key ): bool {
		return null !== $this->meta_problem( $key );
	}

	/**
	 * Why a meta key must never be synced, or null when it may be.
	 *
	 * @param string $key A user meta key.
	 */
	public function meta_problem( string $key ): ?string {
		$problem = UserRelay_Protected_Meta::problem( $key );
		if ( null !== $problem ) {
			return $problem;
		}
		if ( is_multisite() && in_array( strtolower( $key ), self::NETWORK_META, true ) ) {
			return sprintf( 'meta key %s is the network\'s own (which blog is the user\'s primary one): never synced', wp_json_encode( $key ) );
		}
		if ( null === $this->deny_regex ) {
			$parts = array();
			foreach ( $this->meta_deny_patterns() as $pattern ) {
				$parts[] = str_replace( '\\*', '.*', preg_quote( $pattern, '/' ) );
			}
			$this->deny_regex = $parts ? '/^(?:' . implode( '|', $parts ) . ')$/is' : '';
		}
		if ( '' !== $this->deny_regex && 1 === preg_match( $this->deny_regex, $key ) ) {
			return sprintf( 'meta key %s is denied on this site (USERRELAY_META_DENY)', wp_json_encode( $key ) );
		}
		return null;
	}

	/**
	 * The primary blog of a network: USERRELAY_BLOG_ID, else the main site. Its settings keep
	 * the names a network used before each blog had its own (userrelay_url, _site, _key), and
	 * USERRELAY_SITE and USERRELAY_KEY in wp-config.php are its. On a single site, the site.
	 */
	public function primary_blog(): int {
		if ( ! is_multisite() ) {
			return (int) get_current_blog_id();
		}
		if ( defined( 'USERRELAY_BLOG_ID' ) && (int) USERRELAY_BLOG_ID > 0 ) {
			return (int) USERRELAY_BLOG_ID;
		}
		return (int) get_main_site_id();
	}

	/**
	 * The blog these settings are read for: the current one (switch_to_blog() changes it).
	 */
	public function blog_id(): int {
		return (int) get_current_blog_id();
	}

	/**
	 * Whether the current blog is the primary one (always, on a single site).
	 */
	public function is_primary_blog(): bool {
		return ! is_multisite() || $this->blog_id() === $this->primary_blog();
	}

	/**
	 * Whether the plugin serves the current blog: every blog does, each with its own settings
	 * (whether one is connected to a relay is is_configured()).
	 */
	public function serves_this_blog(): bool {
		return true;
	}

	/**
	 * Whether a user belongs to the current blog (always, on a single site). On a network
	 * users are shared; a blog's plugin lists, reports and changes its own members only.
	 *
	 * @param int $user_id User id.
	 */
	public function is_member( int $user_id ): bool {
		return ! is_multisite() || is_user_member_of_blog( $user_id, $this->blog_id() );
	}

	/**
	 * The option a setting is saved in: its own name on a single site and for the primary
	 * blog of a network, the name and the blog id for any other blog (userrelay_key_3).
	 *
	 * @param string $constant One of the keys of self::OPTIONS.
	 */
	public function option_name( string $constant ): string {
		return self::OPTIONS[ $constant ] . ( $this->is_primary_blog() ? '' : '_' . $this->blog_id() );
	}

	/**
	 * Saves a setting's option where raw() reads it: a site option on a network.
	 *
	 * @param string $constant One of the keys of self::OPTIONS.
	 * @param string $value    The value.
	 */
	public function save( string $constant, string $value ): void {
		if ( is_multisite() ) {
			update_site_option( $this->option_name( $constant ), $value );
		} else {
			update_option( self::OPTIONS[ $constant ], $value, 'no' );
		}
	}

	/**
	 * A setting's raw value: the constant if defined, else the option.
	 *
	 * @param string $constant One of the keys of self::OPTIONS.
	 */
	private function raw( string $constant ): string {
		if ( $this->is_constant( $constant ) ) {
			return (string) constant( $constant );
		}
		if ( is_multisite() ) {
			return (string) get_site_option( $this->option_name( $constant ), '' );
		}
		return (string) get_option( self::OPTIONS[ $constant ], '' );
	}
}
