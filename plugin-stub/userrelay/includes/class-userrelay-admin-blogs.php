<?php
/**
 * Network Admin → Settings → UserRelay on a multisite network: the network's blogs, each a site
 * of its own at the relay, and which one the page and its forms are about (?blog=N, the primary
 * blog by default). Single sites have none of this: field() is empty there.
 *
 * Reading ?blog=N only chooses what is shown or saved; UserRelay_Admin checks the capability
 * and the form's nonce before any write.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * The blog the settings page is about, on a network.
 */
final class UserRelay_Admin_Blogs {

	/**
	 * Settings.
	 *
	 * @var UserRelay_Settings
	 */
	private $settings;

	/**
	 * Constructor.
	 *
	 * @param UserRelay_Settings $settings Settings.
	 */
	public function __construct( UserRelay_Settings $settings ) {
		$this->settings = $settings;
	}

	/**
	 * On a network: its blogs, each with the relay site it is (or not connected), the one
	 * edited below first named.
	 */
	public function render(): void {
		$current = get_current_blog_id();
		/* translators: 1: blog name, 2: its address. */
		printf( '<h2 class="userrelay-blog" data-blog="%d">%s</h2>', (int) $current, esc_html( sprintf( __( 'Connection of %1$s (%2$s)', 'userrelay' ), get_bloginfo( 'name' ), home_url( '/' ) ) ) );
		echo '<p>' . esc_html__( 'Each site of this network is a site of its own at the relay, with its own site id and key: it reports its own users, with their roles on it, and applies what its links deliver. Choose the site to connect:', 'userrelay' ) . '</p><ul class="userrelay-blogs">';
		foreach ( get_sites( array( 'number' => 500 ) ) as $site ) {
			switch_to_blog( (int) $site->blog_id );
			$id = $this->settings->is_configured() ? $this->settings->site() : '';
			restore_current_blog();
			printf(
				'<li><a href="%s">%s</a> %s</li>',
				esc_url( network_admin_url( 'settings.php?page=' . UserRelay_Admin::PAGE . '&blog=' . (int) $site->blog_id ) ),
				esc_html( $site->domain . $site->path ),
				'' === $id ? esc_html__( '(not connected)', 'userrelay' ) : '<code>' . esc_html( $id ) . '</code>' . ( (int) $site->blog_id === (int) $current ? ' ' . esc_html__( '(shown below)', 'userrelay' ) : '' )
			);
		}
		echo '</ul>';
	}

	/**
	 * On a network, switches to the blog the form or page is about (?blog=N, else the primary
	 * blog; an id that is no blog of the network is the primary blog too), and returns its id;
	 * 0 on a single site. The page restores it; a form handler ends in a redirect.
	 */
	public function switch_to_chosen(): int {
		if ( ! is_multisite() ) {
			return 0;
		}
		// Read only to choose which blog's settings are shown or saved: the capability and the
		// form's nonce are checked before any write (UserRelay_Admin::authorize()).
		$blog = 0;
		if ( isset( $_POST['blog'] ) ) { // phpcs:ignore WordPress.Security.NonceVerification.Missing
			$blog = absint( wp_unslash( $_POST['blog'] ) ); // phpcs:ignore WordPress.Security.NonceVerification.Missing
		} elseif ( isset( $_GET['blog'] ) ) { // phpcs:ignore WordPress.Security.NonceVerification.Recommended
			$blog = absint( wp_unslash( $_GET['blog'] ) ); // phpcs:ignore WordPress.Security.NonceVerification.Recommended
		}
		if ( ! $blog || ! get_site( $blog ) ) {
			$blog = $this->settings->primary_blog();
		}
		switch_to_blog( $blog );
		return $blog;
	}

	/**
	 * On a network, the hidden field naming the blog a form is about; '' on a single site.
	 */
	public static function field(): string {
		return is_multisite() ? '<input type="hidden" name="blog" value="' . esc_attr( (string) get_current_blog_id() ) . '">' : '';
	}
}
